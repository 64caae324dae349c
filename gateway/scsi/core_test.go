package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"
)

func TestTestUnitReadyAndUnknownOpcode(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	expectGood(t, run(tg, []byte{0, 0, 0, 0, 0, 0}, nil))
	r := run(tg, []byte{0xff, 0, 0, 0, 0, 0}, nil)
	expectSense(t, r, SenseIllegalRequest, ASCInvalidCommandOpcode)
	// Reserved bit set in TEST UNIT READY byte 1, and NACA in the control byte.
	expectField(t, run(tg, []byte{0, 0x01, 0, 0, 0, 0}, nil), true, 1, 0)
	expectField(t, run(tg, []byte{0, 0, 0, 0, 0, 0x04}, nil), true, 5, 2)
}

func TestMissingLUN(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	ctx := context.Background()
	r := tg.Execute(ctx, &Command{Nexus: testNexus, LUN: 5, CDB: []byte{0, 0, 0, 0, 0, 0}})
	expectSense(t, r, SenseIllegalRequest, ASCLUNotSupported)
	r = tg.Execute(ctx, &Command{Nexus: testNexus, LUN: 5, CDB: []byte{0x12, 0, 0, 0, 96, 0}})
	expectGood(t, r)
	if r.DataIn[0] != 0x7f {
		t.Fatalf("INQUIRY on a missing LUN: peripheral byte %#x, want 0x7f", r.DataIn[0])
	}
	r = tg.Execute(ctx, &Command{Nexus: testNexus, LUN: 5, CDB: []byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}})
	expectGood(t, r)
	if binary.BigEndian.Uint32(r.DataIn) != 8 {
		t.Fatalf("REPORT LUNS list length %d, want 8", binary.BigEndian.Uint32(r.DataIn))
	}
	r = tg.Execute(ctx, &Command{Nexus: testNexus, LUN: 5, CDB: []byte{0x03, 0, 0, 0, 18, 0}})
	expectGood(t, r)
	if SenseASC(r.DataIn) != ASCLUNotSupported {
		t.Fatalf("REQUEST SENSE on a missing LUN: ASC %#04x", SenseASC(r.DataIn))
	}
}

func TestReadWriteRoundTrip(t *testing.T) {
	tg, _ := newTestTarget(t, 4096)
	for _, c := range []struct {
		name  string
		write []byte
		read  []byte
	}{
		{"6", []byte{0x0a, 0, 0, 10, 2, 0}, []byte{0x08, 0, 0, 10, 2, 0}},
		{"10", cdb10(0x2a, 0x08, 20, 2), cdb10(0x28, 0x10, 20, 2)},
		{"12", cdb12(0xaa, 0, 30, 2), cdb12(0xa8, 0, 30, 2)},
		{"16", cdb16(0x8a, 0, 40, 2), cdb16(0x88, 0, 40, 2)},
	} {
		data := fill(1024, c.name[0])
		r := run(tg, c.write, data)
		expectGood(t, r)
		if r.DataOutWanted != 1024 {
			t.Fatalf("WRITE(%s) DataOutWanted %d", c.name, r.DataOutWanted)
		}
		r = run(tg, c.read, nil)
		expectGood(t, r)
		if !bytes.Equal(r.DataIn, data) {
			t.Fatalf("READ(%s) returned other data", c.name)
		}
		r.Release()
	}
	// READ(6) length 0 means 256 blocks.
	r := run(tg, []byte{0x08, 0, 0, 0, 0, 0}, nil)
	expectGood(t, r)
	if len(r.DataIn) != 256*512 {
		t.Fatalf("READ(6) length 0: %d bytes", len(r.DataIn))
	}
}

func TestReadWriteErrors(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	expectSense(t, run(tg, cdb10(0x28, 0, 1023, 2), nil), SenseIllegalRequest, ASCLBAOutOfRange)
	expectSense(t, run(tg, cdb10(0x28, 0, 1025, 0), nil), SenseIllegalRequest, ASCLBAOutOfRange)
	expectGood(t, run(tg, cdb10(0x28, 0, 1024, 0), nil))
	expectSense(t, run(tg, cdb16(0x88, 0, 1<<63, 1), nil), SenseIllegalRequest, ASCLBAOutOfRange)
	// RDPROTECT without protection information is an invalid field at byte 1 bit 7.
	expectField(t, run(tg, cdb10(0x28, 0x20, 0, 1), nil), true, 1, 5)
	// Short data-out, not a whole block: refused, nothing written.
	r := run(tg, cdb10(0x2a, 0, 0, 2), fill(600, 1))
	expectSense(t, r, SenseIllegalRequest, ASCInvalidFieldInCmdIU)
	if r.DataOutWanted != 1024 {
		t.Fatalf("DataOutWanted %d", r.DataOutWanted)
	}
	r = run(tg, cdb10(0x28, 0, 0, 2), nil)
	if !bytes.Equal(r.DataIn, make([]byte, 1024)) {
		t.Fatal("a refused short write changed the medium")
	}
	// Short data-out of whole blocks: those blocks are written, GOOD, the rest is the transport's residual.
	r = run(tg, cdb10(0x2a, 0, 0, 2), fill(512, 2))
	expectGood(t, r)
	if r.DataOutWanted != 1024 {
		t.Fatalf("DataOutWanted %d", r.DataOutWanted)
	}
	r = run(tg, cdb10(0x28, 0, 0, 2), nil)
	if !bytes.Equal(r.DataIn[:512], fill(512, 2)) || !allZero(r.DataIn[512:]) {
		t.Fatal("truncated write wrote the wrong blocks")
	}
	expectGood(t, run(tg, cdb10(0x2a, 0, 0, 1), nil)) // no data at all: nothing written
	// Longer data-out: executed with the CDB's length.
	expectGood(t, run(tg, cdb10(0x2a, 0, 0, 1), fill(1024, 7)))
	r = run(tg, cdb10(0x28, 0, 0, 2), nil)
	if !bytes.Equal(r.DataIn[:512], fill(512, 7)) || !bytes.Equal(r.DataIn[512:], make([]byte, 512)) {
		t.Fatal("long data-out wrote beyond the CDB's transfer length")
	}
	// Beyond the maximum transfer length (on an LU big enough for the range to be valid).
	big, _ := newTestTarget(t, 2*maxTransferBytes/512)
	expectField(t, run(big, cdb16(0x88, 0, 0, maxTransferBytes/512+1), nil), true, 10, -1)
	expectField(t, run(big, cdb16(0x8a, 0, 0, maxTransferBytes/512+1), nil), true, 10, -1)
}

func TestReadCapacity(t *testing.T) {
	tg, _ := newTestTarget(t, 2048)
	r := run(tg, make([]byte, 10, 10), nil)
	_ = r
	c := make([]byte, 10)
	c[0] = 0x25
	r = run(tg, c, nil)
	expectGood(t, r)
	if binary.BigEndian.Uint32(r.DataIn) != 2047 || binary.BigEndian.Uint32(r.DataIn[4:]) != 512 {
		t.Fatalf("READ CAPACITY(10) %x", r.DataIn)
	}
	c16 := make([]byte, 16)
	c16[0], c16[1], c16[13] = 0x9e, 0x10, 32
	r = run(tg, c16, nil)
	expectGood(t, r)
	if len(r.DataIn) != 32 || binary.BigEndian.Uint64(r.DataIn) != 2047 || r.DataIn[14]&0xc0 != 0xc0 || r.DataIn[13] != 0 {
		t.Fatalf("READ CAPACITY(16) %x", r.DataIn)
	}
	c16[13] = 8
	if r = run(tg, c16, nil); len(r.DataIn) != 8 {
		t.Fatalf("READ CAPACITY(16) allocation length 8 returned %d bytes", len(r.DataIn))
	}
}

func TestInquiry(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	r := run(tg, []byte{0x12, 0, 0, 0, 0xff, 0}, nil)
	expectGood(t, r)
	d := r.DataIn
	if len(d) != 96 || d[0] != 0 || d[2] != 6 || d[4] != 91 || string(d[8:16]) != "OPENSAN " ||
		string(d[16:32]) != "iSCSI Disk      " || string(d[32:36]) != "0001" {
		t.Fatalf("standard INQUIRY %q", d)
	}
	if binary.BigEndian.Uint16(d[58:]) != vdSAM5 || binary.BigEndian.Uint16(d[60:]) != vdSPC4 ||
		binary.BigEndian.Uint16(d[62:]) != vdSBC3 || binary.BigEndian.Uint16(d[64:]) != vdISCSI {
		t.Fatalf("version descriptors %x", d[58:74])
	}
	// Page code without EVPD.
	expectField(t, run(tg, []byte{0x12, 0, 0x80, 0, 0xff, 0}, nil), true, 2, -1)
	// Unsupported VPD page.
	expectField(t, run(tg, []byte{0x12, 1, 0x99, 0, 0xff, 0}, nil), true, 2, -1)
	r = run(tg, []byte{0x12, 1, 0, 0, 0xff, 0}, nil)
	expectGood(t, r)
	if !bytes.Equal(r.DataIn[4:], vpdPages) {
		t.Fatalf("VPD 0x00 %x", r.DataIn)
	}
	for _, p := range vpdPages {
		r = run(tg, []byte{0x12, 1, p, 0x10, 0, 0}, nil)
		expectGood(t, r)
		if r.DataIn[1] != p || int(binary.BigEndian.Uint16(r.DataIn[2:]))+4 != len(r.DataIn) {
			t.Fatalf("VPD %#x header %x, %d bytes", p, r.DataIn[:4], len(r.DataIn))
		}
	}
	r = run(tg, []byte{0x12, 1, 0x80, 0, 0xff, 0}, nil)
	if string(r.DataIn[4:]) != "SERIAL0" {
		t.Fatalf("VPD 0x80 %q", r.DataIn)
	}
	r = run(tg, []byte{0x12, 1, 0x83, 0, 0xff, 0}, nil)
	d = r.DataIn
	// First designator: NAA, binary, LU association, 8 bytes, NAA nibble 3.
	if d[4] != 0x01 || d[5] != 0x03 || d[7] != 8 || d[8]>>4 != 3 {
		t.Fatalf("VPD 0x83 first designator %x", d[4:16])
	}
	if !bytes.Contains(d, []byte("iqn.2026-01.org.opensan:test,t,0x0001\x00")) {
		t.Fatalf("VPD 0x83 lacks the target port name: %q", d)
	}
	// Allocation length truncates.
	r = run(tg, []byte{0x12, 0, 0, 0, 5, 0}, nil)
	if len(r.DataIn) != 5 {
		t.Fatalf("allocation length 5: %d bytes", len(r.DataIn))
	}
}

func TestReportLUNsAndUnitAttentions(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	other := &Nexus{InitiatorPort: "other,i,0x1", RelativeTargetPort: 1}
	ctx := context.Background()
	// The other nexus starts with a power-on unit attention.
	r := tg.Execute(ctx, &Command{Nexus: other, CDB: []byte{0, 0, 0, 0, 0, 0}})
	expectSense(t, r, SenseUnitAttention, ASCPowerOnResetOccurred)
	expectGood(t, tg.Execute(ctx, &Command{Nexus: other, CDB: []byte{0, 0, 0, 0, 0, 0}}))

	if err := tg.AddLU(300, LUConfig{Device: newMem(1024)}); err != nil {
		t.Fatal(err)
	}
	// INQUIRY does not report it, TUR does.
	expectGood(t, run(tg, []byte{0x12, 0, 0, 0, 36, 0}, nil))
	expectSense(t, run(tg, []byte{0, 0, 0, 0, 0, 0}, nil), SenseUnitAttention, ASCReportedLUNsDataChanged)
	// REPORT LUNS clears it on the other nexus.
	r = tg.Execute(ctx, &Command{Nexus: other, CDB: []byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}})
	expectGood(t, r)
	want := []byte{0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x41, 0x2c, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(r.DataIn, want) {
		t.Fatalf("REPORT LUNS %x, want %x", r.DataIn, want)
	}
	expectGood(t, tg.Execute(ctx, &Command{Nexus: other, CDB: []byte{0, 0, 0, 0, 0, 0}}))
	expectField(t, run(tg, []byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0}, nil), true, 6, -1)
	expectField(t, run(tg, []byte{0xa0, 0, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil), true, 2, -1)

	// LUN RESET from one nexus: the other gets BUS DEVICE RESET FUNCTION OCCURRED, via REQUEST SENSE too.
	if tg.LUNReset(testNexus, 0) != TMFComplete {
		t.Fatal("LUN RESET")
	}
	r = tg.Execute(ctx, &Command{Nexus: other, CDB: []byte{0x03, 0, 0, 0, 252, 0}})
	expectGood(t, r)
	if SenseKey(r.DataIn) != SenseUnitAttention || SenseASC(r.DataIn) != ASCBusDeviceResetOccurred {
		t.Fatalf("REQUEST SENSE after LUN reset: %x", r.DataIn)
	}
	expectGood(t, tg.Execute(ctx, &Command{Nexus: other, CDB: []byte{0, 0, 0, 0, 0, 0}}))
	// The requester gets it too.
	expectSense(t, run(tg, []byte{0, 0, 0, 0, 0, 0}, nil), SenseUnitAttention, ASCBusDeviceResetOccurred)
	expectGood(t, run(tg, []byte{0, 0, 0, 0, 0, 0}, nil))
	tg.TargetReset(testNexus, false)
	expectSense(t, run(tg, []byte{0, 0, 0, 0, 0, 0}, nil), SenseUnitAttention, ASCBusResetOccurred)
	expectSense(t, tg.Execute(ctx, &Command{Nexus: other, CDB: []byte{0, 0, 0, 0, 0, 0}}), SenseUnitAttention, ASCBusResetOccurred)
	if tg.LUNReset(testNexus, 9) != TMFNoSuchLUN {
		t.Fatal("LUN RESET of a missing LUN")
	}
	tg.NexusGone(other)
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSyncCacheModeSenseRequestSense(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	expectGood(t, run(tg, cdb10(0x35, 0, 0, 0), nil))
	expectGood(t, run(tg, cdb16(0x91, 0, 0, 1024), nil))
	expectSense(t, run(tg, cdb16(0x91, 0, 1000, 100), nil), SenseIllegalRequest, ASCLBAOutOfRange)
	r := run(tg, []byte{0x1a, 0, 0x3f, 0, 0xff, 0}, nil)
	expectGood(t, r)
	d := r.DataIn
	if int(d[0])+1 != len(d) || d[3] != 8 || d[2]&devSpecDPO == 0 {
		t.Fatalf("MODE SENSE(6) header %x", d[:4])
	}
	if d[12] != pageCaching || d[14]&cachingWCE == 0 {
		t.Fatalf("caching page %x", d[12:16])
	}
	expectSense(t, run(tg, []byte{0x1a, 0, 0xc8, 0, 0xff, 0}, nil), SenseIllegalRequest, ASCSavingParamsNotSupported)
	expectField(t, run(tg, []byte{0x1a, 0, 0x01, 0, 0xff, 0}, nil), true, 2, 5)
	r = run(tg, []byte{0x03, 0, 0, 0, 18, 0}, nil)
	expectGood(t, r)
	if len(r.DataIn) != 18 || r.DataIn[0] != 0x70 || SenseKey(r.DataIn) != SenseNoSense {
		t.Fatalf("REQUEST SENSE %x", r.DataIn)
	}
}

func TestReportTargetPortGroupsAndDefects(t *testing.T) {
	tg, _ := newTestTarget(t, 64)
	r := run(tg, []byte{0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil)
	expectGood(t, r)
	want := []byte{0, 0, 0, 12, 0x80, 0x01, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}
	if !bytes.Equal(r.DataIn, want) {
		t.Fatalf("RTPG %x, want %x", r.DataIn, want)
	}
	r = run(tg, []byte{0xa3, 0x2a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil)
	if len(r.DataIn) != 20 || r.DataIn[4] != 0x10 {
		t.Fatalf("RTPG extended %x", r.DataIn)
	}
	r = run(tg, []byte{0x12, 0, 0, 0, 36, 0}, nil)
	if r.DataIn[5]&0x30 != 0x10 {
		t.Fatal("TPGS not implicit")
	}
	r = run(tg, []byte{0x37, 0, 0x18, 0, 0, 0, 0, 0, 32, 0}, nil)
	expectGood(t, r)
	if !bytes.Equal(r.DataIn, []byte{0, 0x18, 0, 0}) {
		t.Fatalf("READ DEFECT DATA(10) %x", r.DataIn)
	}
	r = run(tg, []byte{0xb7, 0x08, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, nil)
	if len(r.DataIn) != 8 || r.DataIn[1] != 0x08 {
		t.Fatalf("READ DEFECT DATA(12) %x", r.DataIn)
	}
}
