package iscsi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"
)

// TestBHSOffsets pins every accessor to its RFC 7143 byte offset by writing a distinct value through the
// setter (or raw bytes) and checking the raw bytes (or the getter).
func TestBHSOffsets(t *testing.T) {
	u32 := []struct {
		name string
		off  int
		set  func(*BHS, uint32)
		get  func(*BHS) uint32
	}{
		{"ITT", 16, (*BHS).SetITT, (*BHS).ITT},
		{"TTT", 20, (*BHS).SetTTT, (*BHS).TTT},
		{"ExpectedDataLength", 20, nil, (*BHS).ExpectedDataLength},
		{"ReferencedTaskTag", 20, nil, (*BHS).ReferencedTaskTag},
		{"CmdSN", 24, (*BHS).SetCmdSN, (*BHS).CmdSN},
		{"StatSN", 24, (*BHS).SetStatSN, (*BHS).StatSN},
		{"ExpStatSN", 28, (*BHS).SetExpStatSN, (*BHS).ExpStatSN},
		{"ExpCmdSN", 28, (*BHS).SetExpCmdSN, (*BHS).ExpCmdSN},
		{"MaxCmdSN", 32, (*BHS).SetMaxCmdSN, (*BHS).MaxCmdSN},
		{"RefCmdSN", 32, nil, (*BHS).RefCmdSN},
		{"DataSN/R2TSN/ExpDataSN", 36, (*BHS).SetDataSN, (*BHS).DataSN},
		{"BufferOffset", 40, (*BHS).SetBufferOffset, (*BHS).BufferOffset},
		{"BidiResidualCount", 40, (*BHS).SetBidiResidualCount, (*BHS).BidiResidualCount},
		{"ResidualCount", 44, (*BHS).SetResidualCount, (*BHS).ResidualCount},
		{"DesiredDataLength", 44, (*BHS).SetDesiredDataLength, (*BHS).DesiredDataLength},
	}
	for _, c := range u32 {
		var h BHS
		binary.BigEndian.PutUint32(h[c.off:], 0xa1b2c3d4)
		if got := c.get(&h); got != 0xa1b2c3d4 {
			t.Errorf("%s: getter read 0x%x, want field at byte %d", c.name, got, c.off)
		}
		if c.set != nil {
			var h2 BHS
			c.set(&h2, 0x01020304)
			if !bytes.Equal(h2[c.off:c.off+4], []byte{1, 2, 3, 4}) {
				t.Errorf("%s: setter did not write bytes %d-%d: % x", c.name, c.off, c.off+3, h2[:])
			}
		}
	}

	var h BHS
	h.SetOpcode(OpSCSICmd)
	h.SetImmediate(true)
	h.SetFlags(FlagFinal | FlagRead | 2)
	h.SetTotalAHSLength(8)
	h.SetDataSegmentLength(0x123456)
	h.SetLUNField(0x0001000000000000)
	want := []byte{0x41, 0xc2, 0, 0, 2, 0x12, 0x34, 0x56, 0, 1, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(h[:16], want) {
		t.Fatalf("bytes 0-15 = % x, want % x", h[:16], want)
	}
	if h.Opcode() != OpSCSICmd || !h.Immediate() || !h.Final() || h.TaskAttr() != 2 ||
		h.TotalAHSLength() != 8 || h.DataSegmentLength() != 0x123456 || h.LUNField() != 1<<48 {
		t.Fatal("byte 0-15 getters disagree with setters")
	}
	copy(h[32:], bytes.Repeat([]byte{0xcd}, 16))
	if cdb := h.CDB(); len(cdb) != 16 || cdb[0] != 0xcd || &cdb[0] != &h[32] {
		t.Fatal("CDB is not bytes 32-47")
	}

	// Login request/response layout (RFC 7143 11.12, 11.13).
	var l BHS
	l.SetLoginStages(true, false, 1, 3)
	if l[1] != 0x87 || !l.Transit() || l.Continue() || l.CSG() != 1 || l.NSG() != 3 {
		t.Fatalf("login stage byte 0x%02x", l[1])
	}
	l.SetLoginStages(false, true, 0, 1)
	if l[1] != 0x41 {
		t.Fatalf("C bit: byte 1 0x%02x", l[1])
	}
	l[2], l[3] = 7, 5
	if l.VersionMax() != 7 || l.VersionMin() != 5 {
		t.Fatal("version bytes 2-3")
	}
	l.SetISID([6]byte{1, 2, 3, 4, 5, 6})
	l.SetTSIH(0x0708)
	if !bytes.Equal(l[8:16], []byte{1, 2, 3, 4, 5, 6, 7, 8}) || l.TSIH() != 0x0708 || l.ISID() != [6]byte{1, 2, 3, 4, 5, 6} {
		t.Fatalf("ISID/TSIH bytes 8-15: % x", l[8:16])
	}
	binary.BigEndian.PutUint16(l[20:], 0x0b0c)
	if l.CID() != 0x0b0c {
		t.Fatal("CID bytes 20-21")
	}
	l.SetLoginStatus(LoginNotFound)
	if l[36] != 2 || l[37] != 3 || l.StatusClass() != 2 || l.StatusDetail() != 3 {
		t.Fatal("status bytes 36-37")
	}

	var r BHS
	r.SetResponse(9)
	r.SetStatus(0x02)
	if r[2] != 9 || r[3] != 2 || r.Response() != 9 || r.Status() != 2 {
		t.Fatal("response/status bytes 2-3")
	}
	r.SetRejectReason(RejectProtocolError)
	if r[2] != 4 || r.RejectReason() != 4 {
		t.Fatal("reject reason byte 2")
	}
	r[1] = 0x80 | TMFLUNReset
	if r.TMFunction() != TMFLUNReset || r.LogoutReason() != TMFLUNReset {
		t.Fatal("function/reason byte 1 low 7 bits")
	}
	r.SetTime2Wait(0x1112)
	r.SetTime2Retain(0x1314)
	if !bytes.Equal(r[40:44], []byte{0x11, 0x12, 0x13, 0x14}) {
		t.Fatal("Time2Wait/Time2Retain bytes 40-43")
	}
	var a BHS
	a.SetAsyncEvent(1, 2, 0x0304, 0x0506, 0x0708)
	if !bytes.Equal(a[36:44], []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("async bytes 36-43: % x", a[36:44])
	}
}

func samplePDU() *PDU {
	p := &PDU{}
	p.BHS.SetOpcode(OpSCSICmd)
	p.BHS.SetFlags(FlagFinal | FlagWrite)
	p.BHS.SetITT(42)
	p.AHS = AppendAHS(nil, AHSExtendedCDB, append([]byte{0}, bytes.Repeat([]byte{0xee}, 16)...))
	p.Data = []byte("hello, world!") // 13 bytes: 3 bytes of padding
	return p
}

func TestPDURoundTrip(t *testing.T) {
	for _, d := range []Digests{{}, {Header: true}, {Data: true}, {Header: true, Data: true}} {
		var buf bytes.Buffer
		p := samplePDU()
		if err := WritePDU(&buf, p, d); err != nil {
			t.Fatal(err)
		}
		want := 48 + 20 + 16
		if d.Header {
			want += 4
		}
		if d.Data {
			want += 4
		}
		if buf.Len() != want {
			t.Fatalf("%+v: wire length %d, want %d", d, buf.Len(), want)
		}
		q, err := ReadPDU(bytes.NewReader(buf.Bytes()), d, 8192)
		if err != nil {
			t.Fatalf("%+v: %v", d, err)
		}
		if q.BHS != p.BHS || !bytes.Equal(q.AHS, p.AHS) || !bytes.Equal(q.Data, p.Data) {
			t.Fatalf("%+v: round trip differs", d)
		}
		if ext := FindAHS(q.AHS, AHSExtendedCDB); len(ext) != 17 || ext[1] != 0xee {
			t.Fatalf("extended CDB AHS: % x", ext)
		}
	}
}

func TestDigestsDetectCorruption(t *testing.T) {
	d := Digests{Header: true, Data: true}
	var buf bytes.Buffer
	if err := WritePDU(&buf, samplePDU(), d); err != nil {
		t.Fatal(err)
	}
	wire := buf.Bytes()
	hd := append([]byte(nil), wire...)
	hd[20] ^= 1
	if _, err := ReadPDU(bytes.NewReader(hd), d, 8192); !errors.Is(err, ErrHeaderDigest) {
		t.Fatalf("header corruption: %v", err)
	}
	dd := append([]byte(nil), wire...)
	dd[48+20+4] ^= 1
	if _, err := ReadPDU(bytes.NewReader(dd), d, 8192); !errors.Is(err, ErrDataDigest) {
		t.Fatalf("data corruption: %v", err)
	}
	// The data digest covers the padding too (RFC 7143 13.1 "including padding").
	pad := append([]byte(nil), wire...)
	pad[48+20+4+13] = 1
	if _, err := ReadPDU(bytes.NewReader(pad), d, 8192); !errors.Is(err, ErrDataDigest) {
		t.Fatalf("padding corruption: %v", err)
	}
}

// TestCRC32CVector checks the table against RFC 3720 B.4's 32 bytes of zeros.
func TestCRC32CVector(t *testing.T) {
	if got := crc32.Checksum(make([]byte, 32), crc32c); got != 0x8a9136aa {
		t.Fatalf("CRC32C(32 zero bytes) = 0x%08x, want 0x8a9136aa", got)
	}
}

func TestReadHeaderLimits(t *testing.T) {
	var h BHS
	h.SetDataSegmentLength(8193)
	var p PDU
	err := ReadHeader(bytes.NewReader(h[:]), Digests{}, 8192, &p)
	var pe *PDUError
	if !errors.Is(err, ErrDataTooLong) || !errors.As(err, &pe) {
		t.Fatalf("oversized data segment: %v", err)
	}
	// An AHS whose length runs past TotalAHSLength.
	var h2 BHS
	h2.SetTotalAHSLength(4)
	wire := append(h2[:], 0, 9, 1, 0)
	if err := ReadHeader(bytes.NewReader(wire), Digests{}, 8192, &p); !errors.Is(err, ErrBadAHS) {
		t.Fatalf("bad AHS: %v", err)
	}
	if _, err := ReadPDU(bytes.NewReader(h2[:10]), Digests{}, 8192); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short header: %v", err)
	}
}

func TestPad4(t *testing.T) {
	for n, want := range map[int]int{0: 0, 1: 3, 2: 2, 3: 1, 4: 0, 5: 3, 8192: 0} {
		if pad4(n) != want {
			t.Errorf("pad4(%d) = %d, want %d", n, pad4(n), want)
		}
	}
}

// FuzzDecodePDU feeds arbitrary bytes (header, AHS, data, digests) to the PDU reader: it must return a
// PDU or an error, never panic, and a PDU it returns must re-encode to the same bytes.
func FuzzDecodePDU(f *testing.F) {
	for _, d := range []Digests{{}, {Header: true, Data: true}} {
		var buf bytes.Buffer
		WritePDU(&buf, samplePDU(), d)
		f.Add(buf.Bytes(), d.Header, d.Data)
	}
	var login bytes.Buffer
	lp := &PDU{Data: AppendText(nil, KV{"InitiatorName", "iqn.x"})}
	lp.BHS.SetOpcode(OpLoginReq)
	WritePDU(&login, lp, Digests{})
	f.Add(login.Bytes(), false, false)
	f.Add(make([]byte, 48), false, false)
	f.Fuzz(func(t *testing.T, b []byte, hd, dd bool) {
		d := Digests{Header: hd, Data: dd}
		p, err := ReadPDU(bytes.NewReader(b), d, 1<<16)
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WritePDU(&out, p, d); err != nil {
			t.Fatal(err)
		}
		n := out.Len()
		if n > len(b) {
			t.Fatalf("re-encoded %d bytes from %d", n, len(b))
		}
		// Padding bytes are not checked on input when there is no data digest, so compare the rest.
		q, err := ReadPDU(bytes.NewReader(out.Bytes()), d, 1<<16)
		if err != nil || q.BHS != p.BHS || !bytes.Equal(q.AHS, p.AHS) || !bytes.Equal(q.Data, p.Data) {
			t.Fatalf("re-encoded PDU does not decode the same: %v", err)
		}
	})
}
