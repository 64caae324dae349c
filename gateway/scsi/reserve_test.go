package scsi

import (
	"context"
	"encoding/binary"
	"testing"
)

func prout(sa, typ byte, key, saKey uint64) ([]byte, []byte) {
	c := []byte{0x5f, sa, typ, 0, 0, 0, 0, 0, proutParamLen, 0}
	p := make([]byte, proutParamLen)
	binary.BigEndian.PutUint64(p, key)
	binary.BigEndian.PutUint64(p[8:], saKey)
	return c, p
}

func exe(tg *Target, n *Nexus, cdb, out []byte) Result {
	return tg.Execute(context.Background(), &Command{Nexus: n, Tag: nextTag.Add(1), CDB: cdb, DataOut: out})
}

func TestReserve6(t *testing.T) {
	tg, _ := newTestTarget(t, 64)
	b := &Nexus{InitiatorPort: "b"}
	exe(tg, b, []byte{0, 0, 0, 0, 0, 0}, nil)
	expectGood(t, run(tg, []byte{0x16, 0, 0, 0, 0, 0}, nil))
	expectGood(t, run(tg, []byte{0x16, 0, 0, 0, 0, 0}, nil))
	if r := exe(tg, b, []byte{0x16, 0, 0, 0, 0, 0}, nil); r.Status != StatusReservationConflict {
		t.Fatalf("RESERVE from another nexus: %#x", r.Status)
	}
	expectGood(t, exe(tg, b, []byte{0x17, 0, 0, 0, 0, 0}, nil)) // no-op
	if r := exe(tg, b, []byte{0x1a, 0, 0x3f, 0, 0xff, 0}, nil); r.Status != StatusReservationConflict {
		t.Fatalf("MODE SENSE from another nexus: %#x", r.Status)
	}
	expectGood(t, exe(tg, b, []byte{0x12, 0, 0, 0, 36, 0}, nil))
	// A LUN reset drops it.
	tg.LUNReset(b, 0)
	run(tg, []byte{0, 0, 0, 0, 0, 0}, nil)    // the reset unit attention
	exe(tg, b, []byte{0, 0, 0, 0, 0, 0}, nil) // on both nexuses
	expectGood(t, exe(tg, b, []byte{0x16, 0, 0, 0, 0, 0}, nil))
	// NexusGone drops it too.
	tg.NexusGone(b)
	expectGood(t, run(tg, []byte{0x16, 0, 0, 0, 0, 0}, nil))
	expectGood(t, run(tg, []byte{0x17, 0, 0, 0, 0, 0}, nil))
}

func TestPersistentReservations(t *testing.T) {
	tg, _ := newTestTarget(t, 64)
	b := &Nexus{InitiatorPort: "b"}
	exe(tg, b, []byte{0, 0, 0, 0, 0, 0}, nil)
	const ka, kb = 0xaaaa, 0xbbbb
	c, p := prout(proutRegister, 0, 0, ka)
	expectGood(t, run(tg, c, p))
	c, p = prout(proutRegisterIgnore, 0, 0, kb)
	expectGood(t, exe(tg, b, c, p))
	// REGISTER with a wrong key conflicts.
	c, p = prout(proutRegister, 0, 1, 5)
	if r := run(tg, c, p); r.Status != StatusReservationConflict {
		t.Fatalf("REGISTER with a wrong key: %#x", r.Status)
	}
	// READ KEYS: generation 2, two keys.
	r := run(tg, []byte{0x5e, prinReadKeys, 0, 0, 0, 0, 0, 1, 0, 0}, nil)
	expectGood(t, r)
	if binary.BigEndian.Uint32(r.DataIn) != 2 || binary.BigEndian.Uint32(r.DataIn[4:]) != 16 {
		t.Fatalf("READ KEYS %x", r.DataIn)
	}
	// Exclusive access by A: B (registered) can neither read nor write; TUR and INQUIRY pass.
	c, p = prout(proutReserve, prExclusiveAccess, ka, 0)
	expectGood(t, run(tg, c, p))
	if r := exe(tg, b, cdb10(0x28, 0, 0, 1), nil); r.Status != StatusReservationConflict {
		t.Fatalf("READ under EA from a non-holder: %#x", r.Status)
	}
	expectGood(t, exe(tg, b, []byte{0, 0, 0, 0, 0, 0}, nil))
	expectGood(t, run(tg, cdb10(0x2a, 0, 0, 1), fill(512, 1)))
	r = run(tg, []byte{0x5e, prinReadReservation, 0, 0, 0, 0, 0, 1, 0, 0}, nil)
	if binary.BigEndian.Uint32(r.DataIn[4:]) != 16 || binary.BigEndian.Uint64(r.DataIn[8:]) != ka || r.DataIn[21] != prExclusiveAccess {
		t.Fatalf("READ RESERVATION %x", r.DataIn)
	}
	// Release with the wrong type.
	c, p = prout(proutRelease, prWriteExclusive, ka, 0)
	expectSense(t, run(tg, c, p), SenseIllegalRequest, ascInvalidRelease)
	// B preempts A: A's registration goes, B holds a write-exclusive reservation.
	c, p = prout(proutPreempt, prWriteExclusive, kb, ka)
	expectGood(t, exe(tg, b, c, p))
	expectSense(t, run(tg, []byte{0, 0, 0, 0, 0, 0}, nil), SenseUnitAttention, ascRegistrationsPreempted)
	expectGood(t, run(tg, cdb10(0x28, 0, 0, 1), nil))
	if r := run(tg, cdb10(0x2a, 0, 0, 1), fill(512, 1)); r.Status != StatusReservationConflict {
		t.Fatalf("WRITE under WE from a non-holder: %#x", r.Status)
	}
	// REPORT CAPABILITIES and READ FULL STATUS.
	r = run(tg, []byte{0x5e, prinReportCaps, 0, 0, 0, 0, 0, 0, 8, 0}, nil)
	if binary.BigEndian.Uint16(r.DataIn) != 8 || r.DataIn[3]&0x80 == 0 {
		t.Fatalf("REPORT CAPABILITIES %x", r.DataIn)
	}
	r = run(tg, []byte{0x5e, prinReadFullStatus, 0, 0, 0, 0, 0, 1, 0, 0}, nil)
	if binary.BigEndian.Uint64(r.DataIn[8:]) != kb || r.DataIn[8+12] != 1 {
		t.Fatalf("READ FULL STATUS %x", r.DataIn)
	}
	// CLEAR from B removes everything.
	c, p = prout(proutClear, 0, kb, 0)
	expectGood(t, exe(tg, b, c, p))
	expectGood(t, run(tg, cdb10(0x2a, 0, 0, 1), fill(512, 1)))
	// Unsupported service action and APTPL.
	expectField(t, run(tg, []byte{0x5e, 0x04, 0, 0, 0, 0, 0, 1, 0, 0}, nil), true, 1, 4)
	c, p = prout(proutRegisterIgnore, 0, 0, 1)
	p[proutOffFlags] = proutFlagAPTPL
	expectField(t, run(tg, c, p), false, proutOffFlags, 0)
	c[8] = 20
	expectSense(t, run(tg, c, p[:20]), SenseIllegalRequest, ASCParameterListLengthError)
}
