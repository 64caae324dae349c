package scsi

import "encoding/binary"

// CDB decoding: pure functions from CDB bytes to fields, no I/O and no device knowledge. Offsets follow
// SPC-4 4.2 and SBC-3 5.x; every decoder assumes the caller already checked len(cdb) >= CDBLength(op).

// CDBLength returns the CDB length implied by the operation code's group (SPC-4 4.2.5.1): group 0 is 6
// bytes, groups 1 and 2 are 10, group 4 is 16, group 5 is 12. It returns 0 for group 3 (reserved, and
// 0x7F variable length) and groups 6 and 7 (vendor specific).
func CDBLength(op byte) int {
	switch op >> 5 {
	case 0:
		return 6
	case 1, 2:
		return 10
	case 4:
		return 16
	case 5:
		return 12
	}
	return 0
}

// BlockCDB holds the fields common to the READ/WRITE/VERIFY/WRITE SAME/SYNCHRONIZE CACHE/PRE-FETCH
// families, whatever the CDB size.
type BlockCDB struct {
	LBA    uint64 // logical block address
	Blocks uint32 // transfer length / number of logical blocks; READ(6)/WRITE(6) 0 already turned into 256
	Flags  byte   // CDB byte 1 (6-byte CDBs: 0): PROTECT bits 7-5, DPO bit 4, FUA bit 3, ...
	Group  byte   // group number, bits 4-0

	LBAField, LengthField int // byte offsets of the LBA and length fields, for sense field pointers
}

// Flag bits of CDB byte 1 in the block command families (SBC-3).
const (
	flagDPO    = 0x10
	flagFUA    = 0x08
	flagBytchk = 0x06 // VERIFY (2 bits) / WRITE AND VERIFY (bit 1)
	flagImmed  = 0x02 // SYNCHRONIZE CACHE, PRE-FETCH
	flagUnmap  = 0x08 // WRITE SAME
	flagAnchor = 0x10 // WRITE SAME, UNMAP
	flagNDOB   = 0x01 // WRITE SAME(16)
)

// DecodeBlockCDB decodes cdb by its size. ok is false for a CDB too short for its operation code's group.
// The 6-byte form is READ(6)/WRITE(6): a 21-bit LBA and a length where 0 means 256 blocks (SBC-3 5.15).
func DecodeBlockCDB(cdb []byte) (b BlockCDB, ok bool) {
	if len(cdb) == 0 {
		return b, false
	}
	n := CDBLength(cdb[0])
	if n == 0 || len(cdb) < n {
		return b, false
	}
	switch n {
	case 6:
		b.LBA = uint64(cdb[1]&0x1f)<<16 | uint64(cdb[2])<<8 | uint64(cdb[3])
		b.Blocks = uint32(cdb[4])
		if b.Blocks == 0 {
			b.Blocks = 256
		}
		b.LBAField, b.LengthField = 1, 4
	case 10:
		b.Flags = cdb[1]
		b.LBA = uint64(binary.BigEndian.Uint32(cdb[2:]))
		b.Group = cdb[6] & 0x1f
		b.Blocks = uint32(binary.BigEndian.Uint16(cdb[7:]))
		b.LBAField, b.LengthField = 2, 7
	case 12:
		b.Flags = cdb[1]
		b.LBA = uint64(binary.BigEndian.Uint32(cdb[2:]))
		b.Blocks = binary.BigEndian.Uint32(cdb[6:])
		b.Group = cdb[10] & 0x1f
		b.LBAField, b.LengthField = 2, 6
	case 16:
		b.Flags = cdb[1]
		b.LBA = binary.BigEndian.Uint64(cdb[2:])
		b.Blocks = binary.BigEndian.Uint32(cdb[10:])
		b.Group = cdb[14] & 0x1f
		b.LBAField, b.LengthField = 2, 10
	}
	return b, true
}

// DecodeCompareAndWrite decodes COMPARE AND WRITE (SBC-3 5.2): LBA in bytes 2-9, NUMBER OF LOGICAL BLOCKS
// in byte 13 alone.
func DecodeCompareAndWrite(cdb []byte) (b BlockCDB, ok bool) {
	if len(cdb) < 16 {
		return b, false
	}
	b.Flags = cdb[1]
	b.LBA = binary.BigEndian.Uint64(cdb[2:])
	b.Blocks = uint32(cdb[13])
	b.Group = cdb[14] & 0x1f
	b.LBAField, b.LengthField = 2, 13
	return b, true
}

// AllocationLength returns the ALLOCATION LENGTH (data-in) or PARAMETER LIST LENGTH (data-out) field of the
// commands that have one, and its offset; ok is false for commands without it or a short CDB.
func AllocationLength(cdb []byte) (length uint32, field int, ok bool) {
	if len(cdb) == 0 {
		return 0, 0, false
	}
	var off, size int
	switch cdb[0] {
	case 0x03, 0x12, 0x1A: // REQUEST SENSE, INQUIRY (bytes 3-4), MODE SENSE(6)
		off, size = 4, 1
		if cdb[0] == 0x12 {
			off, size = 3, 2
		}
	case 0x15: // MODE SELECT(6): parameter list length
		off, size = 4, 1
	case 0x5A, 0x55, 0x42: // MODE SENSE(10), MODE SELECT(10), UNMAP
		off, size = 7, 2
	case 0x5E, 0x5F: // PERSISTENT RESERVE IN/OUT
		off, size = 7, 2
		if cdb[0] == 0x5F {
			off, size = 5, 4
		}
	case 0xA0: // REPORT LUNS
		off, size = 6, 4
	case 0xA3: // MAINTENANCE IN: REPORT SUPPORTED OPERATION CODES / TMF
		off, size = 6, 4
	case 0x9E: // SERVICE ACTION IN(16): READ CAPACITY(16), GET LBA STATUS
		off, size = 10, 4
	case 0x48: // SANITIZE
		off, size = 7, 2
	default:
		return 0, 0, false
	}
	if len(cdb) < off+size {
		return 0, 0, false
	}
	switch size {
	case 1:
		length = uint32(cdb[off])
	case 2:
		length = uint32(binary.BigEndian.Uint16(cdb[off:]))
	case 4:
		length = binary.BigEndian.Uint32(cdb[off:])
	}
	return length, off, true
}

// ServiceAction returns the service action of the operation codes that carry one in byte 1 bits 4-0
// (SERVICE ACTION IN(16) 0x9E, MAINTENANCE IN 0xA3, MAINTENANCE OUT 0xA4, PERSISTENT RESERVE IN/OUT
// 0x5E/0x5F, SANITIZE 0x48, EXTENDED COPY 0x83, RECEIVE COPY RESULTS 0x84); ok is false for the others.
func ServiceAction(cdb []byte) (sa uint16, ok bool) {
	if len(cdb) < 2 {
		return 0, false
	}
	switch cdb[0] {
	case 0x9E, 0x9F, 0xA3, 0xA4, 0x5E, 0x5F, 0x48, 0x83, 0x84:
		return uint16(cdb[1] & 0x1f), true
	}
	return 0, false
}

// firstBadBit returns the most significant bit set in b (b != 0).
func firstBadBit(b byte) int {
	for bit := 7; bit >= 0; bit-- {
		if b&(1<<bit) != 0 {
			return bit
		}
	}
	return -1
}

// CheckUsage compares cdb against a CDB usage map (SPC-4 6.35.3: a bit set in usage means the bit may be
// set in the CDB). It returns the offset and most significant bit of the first bit set in cdb that usage
// does not allow, skipping byte 0 (operation code) and the CONTROL byte, which the caller checks itself.
// ok is true when every bit is allowed.
func CheckUsage(cdb, usage []byte) (field, bit int, ok bool) {
	for i := 1; i < len(usage)-1 && i < len(cdb); i++ {
		if bad := cdb[i] &^ usage[i]; bad != 0 {
			return i, firstBadBit(bad), false
		}
	}
	return 0, 0, true
}

// Control byte bits (SAM-5 5.2): NACA and the obsolete LINK are not supported.
const (
	controlNACA = 0x04
	controlLink = 0x01
)
