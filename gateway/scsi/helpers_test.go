package scsi

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"

	"opensan/gateway/block"
)

var testNexus = &Nexus{InitiatorPort: "iqn.2026-01.test:init,i,0x000000000001", InitiatorName: "iqn.2026-01.test:init", RelativeTargetPort: 1}

// newTestTarget returns a target with one memory LU of blocks blocks of 512 bytes at LUN 0, with the
// power-on unit attention of testNexus already consumed.
func newTestTarget(t testing.TB, blocks int64) (*Target, *block.Memory) {
	t.Helper()
	tg := NewTarget("iqn.2026-01.org.opensan:test")
	mem := block.NewMemory(blocks*512, 512)
	if err := tg.AddLU(0, LUConfig{Device: mem, Serial: "SERIAL0"}); err != nil {
		t.Fatal(err)
	}
	r := tg.Execute(context.Background(), &Command{Nexus: testNexus, CDB: []byte{0, 0, 0, 0, 0, 0}})
	if r.Status != StatusCheckCondition || SenseASC(r.Sense) != ASCPowerOnResetOccurred {
		t.Fatalf("first TUR: status %#x sense %x, want the power-on unit attention", r.Status, r.Sense)
	}
	return tg, mem
}

var nextTag atomic.Uint64

// run executes cdb with data-out out on LUN 0 from testNexus, with a fresh task tag.
func run(tg *Target, cdb []byte, out []byte) Result {
	return tg.Execute(context.Background(), &Command{Nexus: testNexus, Tag: nextTag.Add(1), CDB: cdb, DataOut: out,
		DataInLength: 1 << 24})
}

// expectGood fails unless r has GOOD status.
func expectGood(t testing.TB, r Result) {
	t.Helper()
	if r.Status != StatusGood {
		t.Fatalf("status %#x, sense key %#x ASC %#04x, want GOOD", r.Status, SenseKey(r.Sense), SenseASC(r.Sense))
	}
}

// expectSense fails unless r is CHECK CONDITION with key and asc.
func expectSense(t testing.TB, r Result, key byte, asc uint16) {
	t.Helper()
	if r.Status != StatusCheckCondition {
		t.Fatalf("status %#x, want CHECK CONDITION %#x/%#04x", r.Status, key, asc)
	}
	if SenseKey(r.Sense) != key || SenseASC(r.Sense) != asc {
		t.Fatalf("sense key %#x ASC %#04x, want %#x/%#04x", SenseKey(r.Sense), SenseASC(r.Sense), key, asc)
	}
}

// expectField fails unless r is INVALID FIELD IN CDB (inCDB) or PARAMETER LIST pointing at field/bit.
func expectField(t testing.TB, r Result, inCDB bool, field, bit int) {
	t.Helper()
	asc := uint16(ASCInvalidFieldInCDB)
	if !inCDB {
		asc = ASCInvalidFieldInParamList
	}
	expectSense(t, r, SenseIllegalRequest, asc)
	v, c, f, b := SenseFieldPointer(r.Sense)
	if !v || c != inCDB || f != field || b != bit {
		t.Fatalf("field pointer valid=%v cd=%v byte %d bit %d, want cd=%v byte %d bit %d", v, c, f, b, inCDB, field, bit)
	}
}

func cdb10(op byte, flags byte, lba uint32, n uint16) []byte {
	c := make([]byte, 10)
	c[0], c[1] = op, flags
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], n)
	return c
}

func cdb16(op byte, flags byte, lba uint64, n uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = op, flags
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], n)
	return c
}

func cdb12(op byte, flags byte, lba uint32, n uint32) []byte {
	c := make([]byte, 12)
	c[0], c[1] = op, flags
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint32(c[6:], n)
	return c
}

func fill(n int, b byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = b
	}
	return p
}

func newMem(blocks int64) *block.Memory { return block.NewMemory(blocks*512, 512) }

// memDev wraps a Memory device so tests can override single methods.
type memDev struct{ *block.Memory }
