package scsi

import (
	"bytes"
	"encoding/binary"
	"sync"
)

// EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.4, 6.18): the copy manager copies blocks
// between logical units of this target, without the data crossing the network (VMware VAAI "XCOPY").
// Supported: identification descriptor target descriptors (E4h) naming an LU by a VPD 0x83 designator,
// and block device to block device segment descriptors (02h). No inline or held data.

// Copy manager limits, reported by RECEIVE COPY RESULTS OPERATING PARAMETERS.
const (
	xcMaxTargetDescs  = 2    // source and destination
	xcMaxSegmentDescs = 8    //
	xcMaxDescListLen  = 1024 // bytes of target plus segment descriptors
	xcMaxSegmentBytes = 32 << 20
	xcMaxHeldResults  = 64 // COPY STATUS results kept per nexus

	xcHeaderLen   = 16
	xcTargetLen   = 32 // identification descriptor target descriptor
	xcSegB2BLen   = 28 // block device to block device segment descriptor, header included
	xcTypeIdent   = 0xe4
	xcTypeSegB2B  = 0x02
	xcUsageHold   = 0 // LIST ID USAGE 00b: keep the results for RECEIVE COPY RESULTS
	xcUsageBad    = 1 // 01b is reserved
	xcStatusOK    = 0x01
	xcStatusError = 0x02

	senseCopyAborted = 0x0A

	ascTooManyTargetDescs    = 0x2606
	ascUnsupportedTargetDesc = 0x2607
	ascTooManySegmentDescs   = 0x2608
	ascUnsupportedSegDesc    = 0x2609
	ascCopyTargetUnreachable = 0x0D02
)

// copyResult is what RECEIVE COPY RESULTS COPY STATUS reports for one list identifier.
type copyResult struct {
	status   byte
	segments uint16
	bytes    uint64
}

// copyResults keeps held results per nexus and list identifier.
type copyResults struct {
	mu sync.Mutex
	m  map[Nexus]map[byte]copyResult
}

func (c *copyResults) put(n Nexus, id byte, r copyResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[Nexus]map[byte]copyResult{}
	}
	if c.m[n] == nil {
		c.m[n] = map[byte]copyResult{}
	}
	if len(c.m[n]) >= xcMaxHeldResults {
		for k := range c.m[n] { // drop an arbitrary old one: SPC-4 lets held data be discarded
			delete(c.m[n], k)
			break
		}
	}
	c.m[n][id] = r
}

func (c *copyResults) get(n Nexus, id byte) (copyResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.m[n][id]
	return r, ok
}

func (c *copyResults) forget(n Nexus) {
	c.mu.Lock()
	delete(c.m, n)
	c.mu.Unlock()
}

func copyAborted(asc uint16) *senseError { return newSense(senseCopyAborted, asc) }

// findLUByDesignator returns the LU whose VPD 0x83 LU designator (NAA or T10 vendor ID) equals the one in
// an identification target descriptor (bytes 4-23: designation descriptor header, then the designator).
func (t *Target) findLUByDesignator(d []byte) *lu {
	typ, n := d[1]&0x0f, int(d[3])
	if d[1]&0x30 != assocLU || n > len(d)-4 {
		return nil
	}
	id := d[4 : 4+n]
	tab := t.lus.Load()
	for _, lun := range tab.luns {
		l := tab.byLUN[lun]
		switch {
		case typ == desigNAA && bytes.Equal(id, l.naa[:]):
			return l
		case typ == desigT10Vendor && bytes.Equal(id, []byte(l.vendor+l.serial)):
			return l
		}
	}
	return nil
}

type xcSegment struct {
	src, dst       *lu
	blocks         uint64
	srcLBA, dstLBA uint64
}

// cmdExtendedCopy runs EXTENDED COPY (LID1). Everything is validated before any block is copied.
func cmdExtendedCopy(x *exec) Result {
	plen := int(binary.BigEndian.Uint32(x.cdb[10:]))
	if plen == 0 {
		return Result{}
	}
	if plen < xcHeaderLen {
		x.wanted = plen
		return checkCondition(paramListLength())
	}
	p, s := x.dataOut(plen)
	if s != nil {
		return checkCondition(s)
	}
	listID := p[0]
	usage := (p[1] >> 3) & 3
	tdl := int(binary.BigEndian.Uint16(p[2:]))
	sdl := int(binary.BigEndian.Uint32(p[8:]))
	inline := int(binary.BigEndian.Uint32(p[12:]))
	switch {
	case usage == xcUsageBad:
		return checkCondition(invalidParam(1, 4))
	case inline != 0:
		return checkCondition(invalidParam(12, -1))
	case tdl+sdl > xcMaxDescListLen:
		return checkCondition(paramListLength())
	case xcHeaderLen+tdl+sdl > plen:
		return checkCondition(paramListLength())
	case tdl%xcTargetLen != 0:
		return checkCondition(invalidParam(2, -1))
	case tdl/xcTargetLen > xcMaxTargetDescs:
		return checkCondition(newSense(SenseIllegalRequest, ascTooManyTargetDescs))
	}
	// Target descriptors.
	var targets []*lu
	for off := xcHeaderLen; off < xcHeaderLen+tdl; off += xcTargetLen {
		d := p[off : off+xcTargetLen]
		if d[0] != xcTypeIdent {
			return checkCondition(newSense(SenseIllegalRequest, ascUnsupportedTargetDesc))
		}
		if d[1]&0x1f != typeDisk { // PERIPHERAL DEVICE TYPE: only block devices
			return checkCondition(invalidParam(off+1, 4))
		}
		// LU ID TYPE (bits 7-6) is ignored and NUL (bit 5) is obsolete in SPC-4.
		l := x.t.findLUByDesignator(d[4:24])
		if l != nil {
			if bl := int(d[29])<<16 | int(d[30])<<8 | int(d[31]); bl != 0 && bl != l.bs {
				return checkCondition(invalidParam(off+29, -1))
			}
		}
		targets = append(targets, l) // nil: unreachable, reported if a segment uses it
	}
	// Segment descriptors: count first (TOO MANY wins over content errors), then decode.
	var segs []xcSegment
	end := xcHeaderLen + tdl + sdl
	for off := xcHeaderLen + tdl; off < end; {
		if end-off < 4 {
			return checkCondition(paramListLength())
		}
		d := p[off:]
		n := 4 + int(binary.BigEndian.Uint16(d[2:]))
		if d[0] != xcTypeSegB2B {
			return checkCondition(newSense(SenseIllegalRequest, ascUnsupportedSegDesc))
		}
		if n != xcSegB2BLen {
			return checkCondition(invalidParam(off+2, -1))
		}
		if off+n > end {
			return checkCondition(paramListLength())
		}
		if len(segs) == xcMaxSegmentDescs {
			return checkCondition(newSense(SenseIllegalRequest, ascTooManySegmentDescs))
		}
		si, di := int(binary.BigEndian.Uint16(d[4:])), int(binary.BigEndian.Uint16(d[6:]))
		if si >= len(targets) || di >= len(targets) || targets[si] == nil || targets[di] == nil {
			return checkCondition(copyAborted(ascCopyTargetUnreachable))
		}
		sg := xcSegment{src: targets[si], dst: targets[di], blocks: uint64(binary.BigEndian.Uint16(d[10:])),
			srcLBA: binary.BigEndian.Uint64(d[12:]), dstLBA: binary.BigEndian.Uint64(d[20:])}
		if sg.src.bs != sg.dst.bs {
			return checkCondition(copyAborted(ASCNoAdditionalSense))
		}
		if sg.srcLBA > sg.src.blocks || sg.blocks > sg.src.blocks-sg.srcLBA ||
			sg.dstLBA > sg.dst.blocks || sg.blocks > sg.dst.blocks-sg.dstLBA {
			return checkCondition(copyAborted(ASCNoAdditionalSense))
		}
		if sg.blocks*uint64(sg.src.bs) > xcMaxSegmentBytes {
			return checkCondition(invalidParam(off+10, -1))
		}
		segs = append(segs, sg)
		off += n
	}
	for _, sg := range segs {
		if sg.dst.readOnly || sg.dst.swp.Load() {
			return checkCondition(writeProtected())
		}
	}

	res := copyResult{status: xcStatusOK}
	var r Result
	for _, sg := range segs {
		if r = x.copySegment(sg); r.Status != StatusGood || r.Aborted {
			res.status = xcStatusError
			break
		}
		res.segments++
		res.bytes += sg.blocks * uint64(sg.src.bs)
	}
	if usage == xcUsageHold {
		x.t.copies.put(x.nexus, listID, res)
	}
	if r.Aborted {
		return r
	}
	if r.Status != StatusGood {
		// SPC-4 6.4.3: a failure while copying is COPY ABORTED.
		return checkCondition(copyAborted(ASCNoAdditionalSense))
	}
	return Result{}
}

// copySegment copies one block-to-block segment in chunks, taking the destination's write locks.
func (x *exec) copySegment(sg xcSegment) Result {
	bs := int64(sg.src.bs)
	total := int64(sg.blocks) * bs
	buf, rel := getBuf(int(min(max(total, 1), chunkBytes)))
	if rel != nil {
		defer rel()
	}
	for done := int64(0); done < total; {
		if x.stopped() {
			return Result{Aborted: true}
		}
		n := min(total-done, int64(len(buf)))
		if _, err := sg.src.dev.ReadAt(buf[:n], int64(sg.srcLBA)*bs+done); err != nil {
			return checkCondition(ioError(err, false))
		}
		lba := sg.dstLBA + uint64(done/bs)
		held := sg.dst.locks.lock(sg.dst.locks.mask(lba, uint64(n/bs)), false)
		err := sg.dst.write(buf[:n], int64(sg.dstLBA)*bs+done, false)
		held.unlock()
		if err != nil {
			return checkCondition(ioError(err, true))
		}
		done += n
	}
	return Result{}
}

// RECEIVE COPY RESULTS service actions (SPC-4 6.18).
const (
	rcrCopyStatus = 0x00
	rcrOpParams   = 0x03
)

func cmdReceiveCopyResults(x *exec) Result {
	alloc := binary.BigEndian.Uint32(x.cdb[10:])
	switch x.cdb[1] & 0x1f {
	case rcrCopyStatus:
		r, ok := x.t.copies.get(x.nexus, x.cdb[2])
		if !ok {
			return checkCondition(invalidCDB(2, -1))
		}
		b := make([]byte, 12)
		binary.BigEndian.PutUint32(b, 8) // AVAILABLE DATA
		b[4] = r.status                  // HDD 0, COPY MANAGER STATUS
		binary.BigEndian.PutUint16(b[5:], r.segments)
		b[7] = 0 // TRANSFER COUNT UNITS: bytes
		binary.BigEndian.PutUint32(b[8:], uint32(min(r.bytes, 0xffffffff)))
		return x.dataIn(b, alloc)
	default: // operating parameters
		impl := []byte{xcTypeSegB2B, xcTypeIdent}
		b := make([]byte, 44, 44+len(impl))
		b[4] = 0x01 // SNLID: copies without a held list identifier are supported
		binary.BigEndian.PutUint16(b[8:], xcMaxTargetDescs)
		binary.BigEndian.PutUint16(b[10:], xcMaxSegmentDescs)
		binary.BigEndian.PutUint32(b[12:], xcMaxDescListLen)
		binary.BigEndian.PutUint32(b[16:], xcMaxSegmentBytes)
		binary.BigEndian.PutUint16(b[34:], 1) // TOTAL CONCURRENT COPIES
		b[36] = 1                             // MAXIMUM CONCURRENT COPIES
		b[37] = 9                             // DATA SEGMENT GRANULARITY: 2^9 bytes
		b[43] = byte(len(impl))
		b = append(b, impl...)
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
		return x.dataIn(b, alloc)
	}
}
