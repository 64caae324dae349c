package scsi

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// xcopyList builds an EXTENDED COPY parameter list: one identification target descriptor per NAA in
// naas, then one block-to-block segment per seg {src index, dst index, blocks, src LBA, dst LBA}.
func xcopyList(listID, usage byte, naas [][8]byte, segs [][5]uint64) []byte {
	p := make([]byte, xcHeaderLen)
	p[0], p[1] = listID, usage<<3
	for _, naa := range naas {
		d := make([]byte, xcTargetLen)
		d[0] = xcTypeIdent
		d[4], d[5], d[7] = codeSetBinary, desigNAA, 8
		copy(d[8:], naa[:])
		d[30] = 2 // DISK BLOCK LENGTH 512
		p = append(p, d...)
	}
	binary.BigEndian.PutUint16(p[2:], uint16(len(naas)*xcTargetLen))
	for _, s := range segs {
		d := make([]byte, xcSegB2BLen)
		d[0] = xcTypeSegB2B
		binary.BigEndian.PutUint16(d[2:], xcSegB2BLen-4)
		binary.BigEndian.PutUint16(d[4:], uint16(s[0]))
		binary.BigEndian.PutUint16(d[6:], uint16(s[1]))
		binary.BigEndian.PutUint16(d[10:], uint16(s[2]))
		binary.BigEndian.PutUint64(d[12:], s[3])
		binary.BigEndian.PutUint64(d[20:], s[4])
		p = append(p, d...)
	}
	binary.BigEndian.PutUint32(p[8:], uint32(len(segs)*xcSegB2BLen))
	return p
}

func xcopyCDB(n int) []byte {
	c := make([]byte, 16)
	c[0] = 0x83
	binary.BigEndian.PutUint32(c[10:], uint32(n))
	return c
}

func TestExtendedCopy(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	if err := tg.AddLU(1, LUConfig{Device: newMem(1024), Serial: "SERIAL1"}); err != nil {
		t.Fatal(err)
	}
	run(tg, []byte{0, 0, 0, 0, 0, 0}, nil) // REPORTED LUNS DATA HAS CHANGED
	a, b := tg.lookup(0).naa, tg.lookup(1).naa
	expectGood(t, run(tg, cdb10(0x2a, 0, 10, 4), fill(2048, 'x')))
	// Within LU 0, and from LU 0 to LU 1, holding the result under list id 7.
	p := xcopyList(7, xcUsageHold, [][8]byte{a, b}, [][5]uint64{{0, 0, 4, 10, 100}, {0, 1, 4, 10, 500}})
	expectGood(t, run(tg, xcopyCDB(len(p)), p))
	if r := run(tg, cdb10(0x28, 0, 100, 4), nil); !bytes.Equal(r.DataIn, fill(2048, 'x')) {
		t.Fatal("copy within the LU")
	}
	r := tg.Execute(t.Context(), &Command{Nexus: testNexus, LUN: 1, Tag: nextTag.Add(1), CDB: cdb10(0x28, 0, 500, 4)})
	expectSense(t, r, SenseUnitAttention, ASCPowerOnResetOccurred) // LUN 1 is new to this nexus
	r = tg.Execute(t.Context(), &Command{Nexus: testNexus, LUN: 1, Tag: nextTag.Add(1), CDB: cdb10(0x28, 0, 500, 4)})
	if !bytes.Equal(r.DataIn, fill(2048, 'x')) {
		t.Fatal("copy to the other LU")
	}
	r = run(tg, []byte{0x84, rcrCopyStatus, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0}, nil)
	expectGood(t, r)
	if r.DataIn[4] != xcStatusOK || binary.BigEndian.Uint16(r.DataIn[5:]) != 2 || binary.BigEndian.Uint32(r.DataIn[8:]) != 4096 {
		t.Fatalf("COPY STATUS %x", r.DataIn)
	}
	expectField(t, run(tg, []byte{0x84, rcrCopyStatus, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0}, nil), true, 2, -1)
	r = run(tg, []byte{0x84, rcrOpParams, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil)
	if binary.BigEndian.Uint16(r.DataIn[8:]) != xcMaxTargetDescs || r.DataIn[43] != 2 {
		t.Fatalf("OPERATING PARAMETERS %x", r.DataIn)
	}

	// Errors.
	expectGood(t, run(tg, xcopyCDB(0), nil))
	p = xcopyList(1, 2, [][8]byte{a}, [][5]uint64{{0, 0, 1, 0, 1}})
	expectSense(t, run(tg, xcopyCDB(len(p)-1), p[:len(p)-1]), SenseIllegalRequest, ASCParameterListLengthError)
	p = xcopyList(1, 2, [][8]byte{a, a, a}, [][5]uint64{{0, 0, 1, 0, 1}})
	expectSense(t, run(tg, xcopyCDB(len(p)), p), SenseIllegalRequest, ascTooManyTargetDescs)
	segs := make([][5]uint64, xcMaxSegmentDescs+1)
	p = xcopyList(1, 2, [][8]byte{a}, segs)
	expectSense(t, run(tg, xcopyCDB(len(p)), p), SenseIllegalRequest, ascTooManySegmentDescs)
	p = xcopyList(1, 2, [][8]byte{a}, [][5]uint64{{0, 0, 1, 0, 1}})
	p[xcHeaderLen] = 0xe0
	expectSense(t, run(tg, xcopyCDB(len(p)), p), SenseIllegalRequest, ascUnsupportedTargetDesc)
	p = xcopyList(1, 2, [][8]byte{a}, [][5]uint64{{0, 0, 1, 0, 1}})
	p[xcHeaderLen+xcTargetLen] = 0x01
	expectSense(t, run(tg, xcopyCDB(len(p)), p), SenseIllegalRequest, ascUnsupportedSegDesc)
	p = xcopyList(1, 2, [][8]byte{a}, [][5]uint64{{0, 1, 1, 0, 1}})
	expectSense(t, run(tg, xcopyCDB(len(p)), p), senseCopyAborted, ascCopyTargetUnreachable)
	p = xcopyList(1, 2, [][8]byte{a}, [][5]uint64{{0, 0, 4, 0, 1022}})
	expectSense(t, run(tg, xcopyCDB(len(p)), p), senseCopyAborted, ASCNoAdditionalSense)
	var unknown [8]byte
	p = xcopyList(1, 2, [][8]byte{unknown}, [][5]uint64{{0, 0, 1, 0, 1}})
	expectSense(t, run(tg, xcopyCDB(len(p)), p), senseCopyAborted, ascCopyTargetUnreachable)
}
