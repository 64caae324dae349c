package iscsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
)

// crc32c is the CRC32C (Castagnoli) table used by HeaderDigest and DataDigest (RFC 7143 13.1).
var crc32c = crc32.MakeTable(crc32.Castagnoli)

// Digests says which digests a connection uses. Both are negotiated at login and take effect with the
// first PDU after the final Login Response.
type Digests struct {
	Header, Data bool
}

// PDU is one iSCSI PDU: the Basic Header Segment, the raw Additional Header Segments (a multiple of 4
// bytes) and the data segment without its padding.
type PDU struct {
	BHS  BHS
	AHS  []byte
	Data []byte
}

// maxAHSLen bounds TotalAHSLength: one byte of 4-byte words, so at most 1020 bytes by construction.
const maxAHSLen = 255 * 4

// pad4 returns how many zero bytes pad n to a multiple of 4.
func pad4(n int) int { return (4 - n&3) & 3 }

// Errors from reading PDUs. A *PDUError wraps them with the field at fault.
var (
	ErrHeaderDigest = errors.New("iscsi: header digest mismatch")
	ErrDataDigest   = errors.New("iscsi: data digest mismatch")
	ErrDataTooLong  = errors.New("iscsi: data segment longer than MaxRecvDataSegmentLength")
	ErrBadAHS       = errors.New("iscsi: malformed additional header segment")
)

// PDUError names the offending field of a received PDU.
type PDUError struct {
	Field  string // e.g. "DataSegmentLength (bytes 5-7)"
	Opcode uint8
	Err    error
}

func (e *PDUError) Error() string {
	return fmt.Sprintf("iscsi: %s: %s: %v", opName(e.Opcode), e.Field, e.Err)
}
func (e *PDUError) Unwrap() error { return e.Err }

// ReadHeader reads the BHS, the AHS and the header digest of the next PDU from r and validates the
// lengths: the data segment must not exceed maxData bytes. It does not read the data segment; the caller
// then calls ReadData with a buffer of p.BHS.DataSegmentLength() bytes (so Data-Out lands straight in the
// command buffer).
func ReadHeader(r io.Reader, d Digests, maxData int, p *PDU) error {
	if _, err := io.ReadFull(r, p.BHS[:]); err != nil {
		return err
	}
	op := p.BHS.Opcode()
	if n := p.BHS.DataSegmentLength(); n > maxData {
		return &PDUError{Field: fmt.Sprintf("DataSegmentLength (bytes 5-7) %d > %d", n, maxData), Opcode: op, Err: ErrDataTooLong}
	}
	p.AHS = p.AHS[:0]
	if n := p.BHS.TotalAHSLength(); n > 0 {
		if cap(p.AHS) < n {
			p.AHS = make([]byte, n)
		}
		p.AHS = p.AHS[:n]
		if _, err := io.ReadFull(r, p.AHS); err != nil {
			return noEOF(err)
		}
		if err := checkAHS(p.AHS); err != nil {
			return &PDUError{Field: "TotalAHSLength (byte 4)", Opcode: op, Err: err}
		}
	}
	if d.Header {
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return noEOF(err)
		}
		sum := crc32.Update(crc32.Checksum(p.BHS[:], crc32c), crc32c, p.AHS)
		if binary.LittleEndian.Uint32(b[:]) != sum {
			return &PDUError{Field: "HeaderDigest", Opcode: op, Err: ErrHeaderDigest}
		}
	}
	return nil
}

// ReadData reads the data segment of the PDU whose header was just read into dst (exactly
// DataSegmentLength bytes), then its padding and data digest.
func ReadData(r io.Reader, d Digests, h *BHS, dst []byte) error {
	if len(dst) != h.DataSegmentLength() {
		return fmt.Errorf("iscsi: ReadData buffer is %d bytes for a %d-byte data segment", len(dst), h.DataSegmentLength())
	}
	if len(dst) == 0 {
		return nil
	}
	if _, err := io.ReadFull(r, dst); err != nil {
		return noEOF(err)
	}
	var tail [8]byte // up to 3 padding bytes and a 4-byte digest
	pad := pad4(len(dst))
	n := pad
	if d.Data {
		n += 4
	}
	if _, err := io.ReadFull(r, tail[:n]); err != nil {
		return noEOF(err)
	}
	if d.Data {
		sum := crc32.Update(crc32.Checksum(dst, crc32c), crc32c, tail[:pad])
		if binary.LittleEndian.Uint32(tail[pad:]) != sum {
			return &PDUError{Field: "DataDigest", Opcode: h.Opcode(), Err: ErrDataDigest}
		}
	}
	return nil
}

// ReadPDU reads a whole PDU, allocating its data segment.
func ReadPDU(r io.Reader, d Digests, maxData int) (*PDU, error) {
	p := new(PDU)
	if err := ReadHeader(r, d, maxData, p); err != nil {
		return nil, err
	}
	p.Data = make([]byte, p.BHS.DataSegmentLength())
	if err := ReadData(r, d, &p.BHS, p.Data); err != nil {
		return nil, err
	}
	return p, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// checkAHS walks the AHS list: each AHS is AHSLength (2 bytes, counting bytes after byte 2), AHSType
// (1 byte), then AHSLength bytes, padded to 4.
func checkAHS(a []byte) error {
	for len(a) > 0 {
		if len(a) < 4 {
			return fmt.Errorf("%w: %d trailing bytes", ErrBadAHS, len(a))
		}
		l := int(binary.BigEndian.Uint16(a))
		total := 3 + l
		total += pad4(total)
		if l == 0 || total > len(a) {
			return fmt.Errorf("%w: AHSLength %d with %d bytes left", ErrBadAHS, l, len(a))
		}
		a = a[total:]
	}
	return nil
}

// FindAHS returns the specific bytes (after AHSType) of the first AHS of type t, or nil.
func FindAHS(a []byte, t uint8) []byte {
	for len(a) >= 4 {
		l := int(binary.BigEndian.Uint16(a))
		total := 3 + l
		total += pad4(total)
		if l == 0 || total > len(a) {
			return nil
		}
		if a[2] == t {
			return a[3 : 3+l]
		}
		a = a[total:]
	}
	return nil
}

// AppendAHS appends an AHS of type t carrying b (the bytes after AHSType), padded to 4 bytes.
func AppendAHS(a []byte, t uint8, b []byte) []byte {
	a = binary.BigEndian.AppendUint16(a, uint16(len(b)))
	a = append(a, t)
	a = append(a, b...)
	return append(a, make([]byte, pad4(3+len(b)))...)
}

var zeroPad [4]byte

// encodeHeader fills dst with BHS, AHS and the header digest and returns it; it sets TotalAHSLength and
// DataSegmentLength from ahs and dataLen. dst must have room for 48+len(ahs)+4 bytes.
func encodeHeader(dst []byte, h *BHS, ahs []byte, dataLen int, d Digests) []byte {
	h.SetTotalAHSLength(len(ahs))
	h.SetDataSegmentLength(dataLen)
	dst = append(dst[:0], h[:]...)
	dst = append(dst, ahs...)
	if d.Header {
		dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst, crc32c))
	}
	return dst
}

// appendPDU appends the iovecs of one PDU to bufs: the encoded header (in hdr, reused storage), the data,
// the padding and the data digest (in dig, 4 bytes of storage owned by the caller).
func appendPDU(bufs net.Buffers, hdr []byte, h *BHS, ahs, data []byte, d Digests, dig []byte) (net.Buffers, []byte) {
	hdr = encodeHeader(hdr, h, ahs, len(data), d)
	bufs = append(bufs, hdr)
	if len(data) == 0 {
		return bufs, hdr
	}
	bufs = append(bufs, data)
	pad := zeroPad[:pad4(len(data))]
	if len(pad) > 0 {
		bufs = append(bufs, pad)
	}
	if d.Data {
		sum := crc32.Update(crc32.Checksum(data, crc32c), crc32c, pad)
		binary.LittleEndian.PutUint32(dig, sum)
		bufs = append(bufs, dig[:4])
	}
	return bufs, hdr
}

// WritePDU writes one PDU to w (login phase and tests; the full feature phase batches with net.Buffers).
func WritePDU(w io.Writer, p *PDU, d Digests) error {
	hdr := make([]byte, 0, BHSLen+len(p.AHS)+4)
	dig := make([]byte, 4)
	bufs, _ := appendPDU(nil, hdr, &p.BHS, p.AHS, p.Data, d, dig)
	_, err := bufs.WriteTo(w)
	return err
}

// appendCRC appends the CRC32C of b (a header digest) to dst.
func appendCRC(dst, b []byte) []byte {
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(b, crc32c))
}

// appendDataCRC appends the CRC32C of data followed by its padding (a data digest) to dst.
func appendDataCRC(dst, data, pad []byte) []byte {
	return binary.LittleEndian.AppendUint32(dst, crc32.Update(crc32.Checksum(data, crc32c), crc32c, pad))
}
