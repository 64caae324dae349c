package scsi

import (
	"encoding/binary"
	"fmt"
)

// physicalBlock is the unit the backends work in, in bytes (page cache, filesystems, RAM pages).
const physicalBlock = 4096

// dataIn returns b trimmed to the allocation length (SPC-4 4.2.5.6: the device server stops at the
// allocation length; the transport handles the initiator's own buffer size).
func (x *exec) dataIn(b []byte, alloc uint32) Result {
	if uint32(len(b)) > alloc {
		b = b[:alloc]
	}
	return Result{DataIn: b}
}

// Standard INQUIRY data layout (SPC-4 6.6.2), offsets in bytes.
const (
	inqOffPeripheral = 0 // qualifier (7-5) and device type (4-0)
	inqOffRMB        = 1
	inqOffVersion    = 2
	inqOffFormat     = 3 // NORMACA, HISUP, RESPONSE DATA FORMAT
	inqOffAddLen     = 4
	inqOffFlags5     = 5 // SCCS ACC TPGS 3PC PROTECT
	inqOffFlags6     = 6
	inqOffFlags7     = 7 // CMDQUE bit 1
	inqOffVendor     = 8
	inqOffProduct    = 16
	inqOffRevision   = 32
	inqOffVersDesc   = 58 // eight 2-byte version descriptors
	inqStdLen        = 96

	typeDisk         = 0x00
	typeUnknown      = 0x1f
	pqNotConnected   = 0x3 << 5 // peripheral qualifier 011b: no LU at this LUN
	versionSPC4      = 0x06
	formatHiSupSPC   = 0x12 // HISUP (hierarchical LUNs) + response data format 2
	flagCmdQue       = 0x02
	flagTPGSImplicit = 0x10 // TPGS 01b: implicit asymmetric access (REPORT TARGET PORT GROUPS)
	desigTPG         = 0x5
	flag3PC          = 0x08 // third-party copy: EXTENDED COPY is supported
	vdSAM5           = 0x00A0
	vdSPC4           = 0x0460
	vdSBC3           = 0x04C0
	vdISCSI          = 0x0960
	protoISCSI       = 0x5
	codeSetBinary    = 0x1
	codeSetASCII     = 0x2
	codeSetUTF8      = 0x3
	assocLU          = 0x0 << 4
	assocTargetPort  = 0x1 << 4
	assocTarget      = 0x2 << 4
	desigT10Vendor   = 0x1
	desigNAA         = 0x3
	desigRelPort     = 0x4
	desigSCSIName    = 0x8
	pivBit           = 0x80
)

// vpdPages lists the supported VPD pages, ascending (SPC-4 7.8.13).
var vpdPages = []byte{0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2}

func cmdInquiry(x *exec) Result {
	evpd := x.cdb[1]&0x01 != 0
	page := x.cdb[2]
	alloc := uint32(binary.BigEndian.Uint16(x.cdb[3:]))
	if !evpd {
		if page != 0 {
			return checkCondition(invalidCDB(2, -1))
		}
		return x.dataIn(x.standardInquiry(), alloc)
	}
	if x.lu == nil {
		// No LU: only the standard data says "nothing here"; VPD pages have nothing to describe.
		b := vpdHeader(page, 0)
		b[0] = pqNotConnected | typeUnknown
		return x.dataIn(b, alloc)
	}
	var b []byte
	switch page {
	case 0x00:
		b = vpdHeader(0x00, len(vpdPages))
		copy(b[4:], vpdPages)
	case 0x80:
		b = vpdHeader(0x80, len(x.lu.serial))
		copy(b[4:], x.lu.serial)
	case 0x83:
		b = x.deviceIdentification()
	case 0x86:
		b = x.extendedInquiry()
	case 0xb0:
		b = x.blockLimits()
	case 0xb1:
		b = vpdHeader(0xb1, 0x3c)
		binary.BigEndian.PutUint16(b[4:], 0x0001) // MEDIUM ROTATION RATE: non-rotating medium
		b[7] = 0x40                               // WABEREQ 01b: reads after BLOCK ERASE succeed (zeros)
	case 0xb2:
		b = x.logicalBlockProvisioning()
	default:
		return checkCondition(invalidCDB(2, -1))
	}
	return x.dataIn(b, alloc)
}

// vpdHeader returns a 4-byte VPD header for page followed by n zero bytes.
func vpdHeader(page byte, n int) []byte {
	b := make([]byte, 4+n)
	b[0] = typeDisk
	b[1] = page
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	return b
}

func (x *exec) standardInquiry() []byte {
	b := make([]byte, inqStdLen)
	if x.lu == nil {
		b[inqOffPeripheral] = pqNotConnected | typeUnknown
	} else {
		b[inqOffPeripheral] = typeDisk
	}
	b[inqOffVersion] = versionSPC4
	b[inqOffFormat] = formatHiSupSPC
	b[inqOffAddLen] = inqStdLen - (inqOffAddLen + 1)
	b[inqOffFlags5] = flagTPGSImplicit | flag3PC
	b[inqOffFlags7] = flagCmdQue
	vendor, product, revision := DefaultVendor, DefaultProduct, DefaultRevision
	if x.lu != nil {
		vendor, product, revision = x.lu.vendor, x.lu.product, x.lu.revision
	}
	copy(b[inqOffVendor:inqOffVendor+8], vendor)
	copy(b[inqOffProduct:inqOffProduct+16], product)
	copy(b[inqOffRevision:inqOffRevision+4], revision)
	for i, vd := range []uint16{vdSAM5, vdSPC4, vdSBC3, vdISCSI} {
		binary.BigEndian.PutUint16(b[inqOffVersDesc+2*i:], vd)
	}
	return b
}

// designator appends one identification descriptor (SPC-4 7.8.6.1).
func designator(b []byte, proto, codeSet, assocType byte, piv bool, id []byte) []byte {
	h := [4]byte{proto<<4 | codeSet, assocType, 0, byte(len(id))}
	if piv {
		h[1] |= pivBit
	}
	return append(append(b, h[:]...), id...)
}

// scsiName returns a SCSI name string designator value: UTF-8, NUL-terminated, padded to a multiple of 4.
func scsiName(s string) []byte {
	n := len(s) + 1
	n += (4 - n%4) % 4
	b := make([]byte, n)
	copy(b, s)
	return b
}

// deviceIdentification builds VPD 0x83: NAA first (Linux and VMware key /dev/disk/by-id and multipath on
// it), T10 vendor ID, then the target port's relative port and name, then the target device name.
func (x *exec) deviceIdentification() []byte {
	b := vpdHeader(0x83, 0)
	b = designator(b, 0, codeSetBinary, assocLU|desigNAA, false, x.lu.naa[:])
	b = designator(b, 0, codeSetASCII, assocLU|desigT10Vendor, false, []byte(x.lu.vendor+x.lu.serial))
	rtp := x.nexus.RelativeTargetPort
	if rtp == 0 {
		rtp = 1
	}
	var rel [4]byte
	binary.BigEndian.PutUint16(rel[2:], rtp)
	b = designator(b, protoISCSI, codeSetBinary, assocTargetPort|desigRelPort, true, rel[:])
	port := fmt.Sprintf("%s,t,0x%04x", x.t.name, rtp)
	b = designator(b, protoISCSI, codeSetUTF8, assocTargetPort|desigSCSIName, true, scsiName(port))
	b = designator(b, 0, codeSetBinary, assocTargetPort|desigTPG, false, []byte{0, 0, 0, targetPortGroup})
	b = designator(b, protoISCSI, codeSetUTF8, assocTarget|desigSCSIName, true, scsiName(x.t.name))
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)-4))
	return b
}

// extendedInquiry builds VPD 0x86 (SPC-4 7.8.7).
func (x *exec) extendedInquiry() []byte {
	b := vpdHeader(0x86, 0x3c)
	b[5] = 0x01 // SIMPSUP only: ORDERED and HEAD OF QUEUE are run as SIMPLE, so not claimed
	b[6] = 0x01 // V_SUP: a volatile write cache exists (SYNCHRONIZE CACHE matters)
	b[7] = 0x01 // LUICLR: unit attentions are kept and cleared per I_T nexus
	return b
}

// blockLimits builds VPD 0xB0 (SBC-3 6.5.3). Lengths are in logical blocks.
func (x *exec) blockLimits() []byte {
	b := vpdHeader(0xb0, 0x3c)
	bs := uint32(x.lu.bs)
	b[4] = 0x01                                                 // WSNZ: WRITE SAME with NUMBER OF BLOCKS 0 is refused
	b[5] = maxCompareAndWrite                                   // MAXIMUM COMPARE AND WRITE LENGTH
	binary.BigEndian.PutUint16(b[6:], uint16(physicalBlock/bs)) // OPTIMAL TRANSFER LENGTH GRANULARITY: a physical block
	binary.BigEndian.PutUint32(b[8:], maxTransferBytes/bs)      // MAXIMUM TRANSFER LENGTH
	binary.BigEndian.PutUint32(b[12:], optimalXferBytes/bs)
	binary.BigEndian.PutUint32(b[16:], maxTransferBytes/bs) // MAXIMUM PREFETCH LENGTH
	binary.BigEndian.PutUint32(b[20:], maxUnmapBlocks)      // MAXIMUM UNMAP LBA COUNT
	binary.BigEndian.PutUint32(b[24:], maxUnmapDescs)       // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
	binary.BigEndian.PutUint32(b[28:], 1)                   // OPTIMAL UNMAP GRANULARITY
	binary.BigEndian.PutUint32(b[32:], 0x80000000)          // UGAVALID, UNMAP GRANULARITY ALIGNMENT 0
	binary.BigEndian.PutUint64(b[36:], maxWriteSameBlocks)  // MAXIMUM WRITE SAME LENGTH
	return b
}

// logicalBlockProvisioning builds VPD 0xB2 (SBC-3 6.5.4): thin provisioned, UNMAP and WRITE SAME
// (10/16) with UNMAP supported, unmapped blocks read zeros.
func (x *exec) logicalBlockProvisioning() []byte {
	b := vpdHeader(0xb2, 4)
	b[5] = 0x80 | 0x40 | 0x20 | 0x04 // LBPU, LBPWS, LBPWS10, LBPRZ
	b[6] = 0x02                      // PROVISIONING TYPE: thin
	return b
}

// cmdReportLUNs runs REPORT LUNS (SPC-4 6.33). It also clears REPORTED LUNS DATA HAS CHANGED for the nexus.
func cmdReportLUNs(x *exec) Result {
	alloc := binary.BigEndian.Uint32(x.cdb[6:])
	if alloc < 16 {
		return checkCondition(invalidCDB(6, -1))
	}
	var luns []uint64
	switch x.cdb[2] {
	case 0x00, 0x02: // LUNs of logical units; all LUNs (there are no well-known LUs)
		luns = x.t.LUNs(&x.nexus)
	case 0x01: // well-known LUs only: none
	default:
		return checkCondition(invalidCDB(2, -1))
	}
	b := make([]byte, 8+8*len(luns))
	binary.BigEndian.PutUint32(b, uint32(8*len(luns)))
	for i, lun := range luns {
		copy(b[8+8*i:], EncodeLUN(lun))
	}
	x.ns.clearUA(ASCReportedLUNsDataChanged)
	return x.dataIn(b, alloc)
}

// EncodeLUN returns the 8-byte SAM LUN for a flat LUN number: peripheral device addressing below 256,
// flat space addressing (01b) up to 16383 (SAM-5 4.7).
func EncodeLUN(lun uint64) []byte {
	b := make([]byte, 8)
	if lun < 256 {
		b[1] = byte(lun)
	} else {
		b[0] = 0x40 | byte(lun>>8)&0x3f
		b[1] = byte(lun)
	}
	return b
}

// DecodeLUN returns the flat LUN number of an 8-byte SAM LUN in peripheral or flat space addressing.
func DecodeLUN(b []byte) uint64 {
	if len(b) < 2 {
		return 0
	}
	switch b[0] >> 6 {
	case 0:
		return uint64(b[1])
	case 1:
		return uint64(b[0]&0x3f)<<8 | uint64(b[1])
	}
	return 1<<64 - 1 // addressing methods the target does not use: matches no LU
}

// cmdRequestSense runs REQUEST SENSE (SPC-4 6.39). Sense is always returned with the status (autosense),
// so nothing is deferred; it reports a pending unit attention (clearing it), a missing LU, a stopped unit,
// or NO SENSE.
func cmdRequestSense(x *exec) Result {
	alloc := uint32(x.cdb[4])
	var s *senseError
	switch {
	case x.lu == nil:
		s = newSense(SenseIllegalRequest, ASCLUNotSupported)
	default:
		if x.lu.sanitizing.Load() {
			s = newSense(SenseNotReady, ascSanitizeInProgress)
		} else if asc := x.ns.takeUA(x.cmd.LUN); asc != 0 {
			s = newSense(SenseUnitAttention, asc)
		} else if x.lu.stopped.Load() {
			s = newSense(SenseNotReady, 0x0402)
		} else {
			s = newSense(SenseNoSense, ASCNoAdditionalSense)
		}
	}
	return x.dataIn(s.bytes(), alloc)
}

func cmdTestUnitReady(x *exec) Result { return Result{} }

func cmdReadCapacity10(x *exec) Result {
	b := make([]byte, 8)
	last := x.lu.blocks - 1
	if last > 0xffffffff {
		last = 0xffffffff // tells the initiator to use READ CAPACITY(16)
	}
	binary.BigEndian.PutUint32(b, uint32(last))
	binary.BigEndian.PutUint32(b[4:], uint32(x.lu.bs))
	return Result{DataIn: b}
}

// cmdReadCapacity16 runs READ CAPACITY(16) (SBC-3 5.16): LBPME and LBPRZ set (thin, zeros after unmap).
func cmdReadCapacity16(x *exec) Result {
	alloc := binary.BigEndian.Uint32(x.cdb[10:])
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b, x.lu.blocks-1)
	binary.BigEndian.PutUint32(b[8:], uint32(x.lu.bs))
	// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT stays 0 although the backends work in 4 KiB units (that
	// is reported as OPTIMAL TRANSFER LENGTH GRANULARITY instead): libiscsi 1.19's GetLBAStatus.UnmapSingle
	// expects a descriptor at an LBA other than the one asked for whenever it is non-zero, which no
	// conforming target can do.
	b[14] = 0x80 | 0x40 // LBPME, LBPRZ; LOWEST ALIGNED LBA 0
	return x.dataIn(b, alloc)
}
