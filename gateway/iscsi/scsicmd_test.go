package iscsi

import (
	"testing"

	"opensan/gateway/scsi"
)

func TestResidual(t *testing.T) {
	cases := []struct {
		exp, want uint64
		flag      uint8
		count     uint32
	}{
		{512, 512, 0, 0},
		{1024, 512, FlagUnderflow, 512},
		{200, 512, FlagOverflow, 312},
		{0, 512, FlagOverflow, 512},
		{10000, 0, FlagUnderflow, 10000},
	}
	for _, c := range cases {
		f, n := residual(c.exp, c.want, FlagOverflow, FlagUnderflow)
		if f != c.flag || n != c.count {
			t.Errorf("residual(exp %d, want %d) = 0x%02x %d, want 0x%02x %d", c.exp, c.want, f, n, c.flag, c.count)
		}
	}
}

func TestTaskAttrAndLUN(t *testing.T) {
	for a, want := range map[uint8]scsi.TaskAttribute{0: scsi.Simple, 1: scsi.Simple, 2: scsi.Ordered, 3: scsi.HeadOfQueue, 4: scsi.ACA, 7: scsi.Simple} {
		if got := taskAttr(a); got != want {
			t.Errorf("ATTR %d -> %d, want %d", a, got, want)
		}
	}
	for _, lun := range []uint64{0, 1, 255, 256, 16383} {
		if got := decodeLUN(encodeLUN(lun)); got != lun {
			t.Errorf("LUN %d round trip %d", lun, got)
		}
	}
	if decodeLUN(0x0001<<48) != 1 || decodeLUN(0x4101<<48) != 0x101 {
		t.Error("peripheral/flat addressing")
	}
	if l := decodeLUN(0xc0 << 56); l < 1<<63 {
		t.Errorf("extended addressing decoded to LUN %d", l)
	}
}

// TestBidiResponse checks the SCSI Response of a bidirectional command: the read residual goes to the
// Bidirectional Read Residual Count with o/u, the write residual to Residual Count with O/U, and status
// is never folded into a Data-In.
func TestBidiResponse(t *testing.T) {
	s := newSession(NewServer(Config{}), nil, defaultParams(), nil, [6]byte{})
	var got *txItem
	s.out = make(chan *txItem, 1) // no writer: capture what would be sent
	tk := &task{itt: 5, read: true, write: true, edtl: 1024, readLen: 512, ordered: true}
	s.active = 1
	s.respond(tk, &scsi.Result{Status: scsi.StatusGood, DataIn: make([]byte, 256), DataOutWanted: 2048})
	select {
	case got = <-s.out:
	default:
		t.Fatal("nothing sent")
	}
	if len(got.pdus) != 2 || got.pdus[0].h.Opcode() != OpDataIn || got.pdus[0].h.Flags()&FlagStatus != 0 {
		t.Fatalf("PDUs %d, first %s flags 0x%02x", len(got.pdus), opName(got.pdus[0].h.Opcode()), got.pdus[0].h.Flags())
	}
	r := got.pdus[1].h
	if r.Opcode() != OpSCSIResp || r.Flags() != FlagFinal|FlagBiUnder|FlagOverflow || r.BidiResidualCount() != 256 || r.ResidualCount() != 1024 {
		t.Fatalf("response flags 0x%02x bidi residual %d residual %d", r.Flags(), r.BidiResidualCount(), r.ResidualCount())
	}
	if s.active != 0 {
		t.Fatal("CmdSN slot not returned")
	}
}
