package scsi

import (
	"bytes"
	"testing"
)

// TestSenseLayout pins the fixed-format sense data offsets (SPC-4 4.5.3 table 45).
func TestSenseLayout(t *testing.T) {
	s := invalidCDB(0x0102, 5).bytes()
	want := []byte{
		0x70,       // 0: response code, VALID clear
		0,          // 1: obsolete
		0x05,       // 2: ILLEGAL REQUEST
		0, 0, 0, 0, // 3-6: INFORMATION
		10,         // 7: additional sense length
		0, 0, 0, 0, // 8-11: command-specific
		0x24, 0x00, // 12-13: INVALID FIELD IN CDB
		0,                      // 14: FRU
		0x80 | 0x40 | 0x08 | 5, // 15: SKSV, C/D, BPV, bit 5
		0x01, 0x02,             // 16-17: field pointer
	}
	if !bytes.Equal(s, want) {
		t.Fatalf("sense %x\nwant  %x", s, want)
	}
	m := miscompare(0x01020304).bytes()
	if m[0] != 0xf0 || m[2] != SenseMiscompare || !bytes.Equal(m[3:7], []byte{1, 2, 3, 4}) || m[12] != 0x1d || m[15] != 0 {
		t.Fatalf("miscompare sense %x", m)
	}
	p := invalidParam(9, -1).bytes()
	if p[15] != 0x80 || p[17] != 9 || SenseASC(p) != ASCInvalidFieldInParamList {
		t.Fatalf("parameter list sense %x", p)
	}
	if v, cd, f, b := SenseFieldPointer(p); !v || cd || f != 9 || b != -1 {
		t.Fatalf("decoded pointer %v %v %d %d", v, cd, f, b)
	}
}

func TestCDBLengthAndDecode(t *testing.T) {
	for op, n := range map[byte]int{0x00: 6, 0x28: 10, 0x5a: 10, 0x7f: 0, 0x88: 16, 0xa8: 12, 0xc0: 0} {
		if CDBLength(op) != n {
			t.Fatalf("CDBLength(%#x) = %d, want %d", op, CDBLength(op), n)
		}
	}
	b, ok := DecodeBlockCDB([]byte{0x08, 0xff, 0x12, 0x34, 0, 0})
	if !ok || b.LBA != 0x1f1234 || b.Blocks != 256 {
		t.Fatalf("READ(6) %+v", b)
	}
	b, ok = DecodeBlockCDB(cdb16(0x88, 0x18, 0x0102030405060708, 0x0a0b0c0d))
	if !ok || b.LBA != 0x0102030405060708 || b.Blocks != 0x0a0b0c0d || b.Flags != 0x18 || b.LengthField != 10 {
		t.Fatalf("READ(16) %+v", b)
	}
	if _, ok := DecodeBlockCDB([]byte{0x28, 0, 0}); ok {
		t.Fatal("short CDB decoded")
	}
	if l, f, ok := AllocationLength([]byte{0x12, 1, 0x80, 0x01, 0x02, 0}); !ok || l != 0x102 || f != 3 {
		t.Fatalf("INQUIRY allocation length %d at %d", l, f)
	}
	if got := DecodeLUN(EncodeLUN(300)); got != 300 {
		t.Fatalf("LUN 300 round trip: %d", got)
	}
}
