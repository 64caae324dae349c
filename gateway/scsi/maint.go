package scsi

import (
	"encoding/binary"
	"time"
)

// REPORT SUPPORTED OPERATION CODES reporting options (SPC-4 6.35.1).
const (
	rsocAll         = 0 // every command
	rsocOpcode      = 1 // one operation code without service actions
	rsocOpcodeSA    = 2 // one operation code and service action
	rsocOpcodeMaybe = 3 // one operation code, with the service action if it has them (SPC-4 r37)
)

// timeoutsDescriptor is the command timeouts descriptor (SPC-4 6.35.4): length 0x0A, then nominal and
// recommended timeouts in seconds.
func timeoutsDescriptor(o *opInfo) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b, 0x0a)
	binary.BigEndian.PutUint32(b[4:], o.nominal)
	binary.BigEndian.PutUint32(b[8:], o.recommended)
	return b
}

func cmdReportOpcodes(x *exec) Result {
	rctd := x.cdb[2]&0x80 != 0
	opt := x.cdb[2] & 0x07
	reqOp := x.cdb[3]
	reqSA := binary.BigEndian.Uint16(x.cdb[4:])
	alloc := binary.BigEndian.Uint32(x.cdb[6:])

	if opt == rsocAll {
		b := make([]byte, 4)
		for _, o := range opList {
			d := make([]byte, 8)
			d[0] = o.op
			binary.BigEndian.PutUint16(d[2:], o.sa)
			if o.hasSA {
				d[5] |= 0x01 // SERVACTV
			}
			if rctd {
				d[5] |= 0x02 // CTDP
			}
			binary.BigEndian.PutUint16(d[6:], uint16(len(o.usage)))
			b = append(b, d...)
			if rctd {
				b = append(b, timeoutsDescriptor(o)...)
			}
		}
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
		return x.dataIn(b, alloc)
	}

	var found *opInfo
	switch opt {
	case rsocOpcode:
		if saTable[reqOp] != nil {
			return checkCondition(invalidCDB(2, 2))
		}
		found = opTable[reqOp]
	case rsocOpcodeSA:
		if saTable[reqOp] == nil {
			return checkCondition(invalidCDB(2, 2))
		}
		found = findSA(reqOp, reqSA)
	case rsocOpcodeMaybe:
		if saTable[reqOp] != nil {
			found = findSA(reqOp, reqSA)
		} else {
			found = opTable[reqOp]
		}
	default:
		return checkCondition(invalidCDB(2, 2))
	}
	b := make([]byte, 4)
	if found == nil {
		b[1] = 0x01 // SUPPORT 001b: not supported
		return x.dataIn(b, alloc)
	}
	b[1] = 0x03 // SUPPORT 011b: supported as in the standard
	if rctd {
		b[1] |= 0x80 // CTDP
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(found.usage)))
	b = append(b, found.usage...)
	if rctd {
		b = append(b, timeoutsDescriptor(found)...)
	}
	return x.dataIn(b, alloc)
}

func findSA(op byte, sa uint16) *opInfo {
	for _, o := range saTable[op] {
		if o.sa == sa {
			return o
		}
	}
	return nil
}

// cmdReportTMFs runs REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 6.36): ABORT TASK, ABORT TASK SET,
// CLEAR TASK SET, LOGICAL UNIT RESET and TARGET RESET.
func cmdReportTMFs(x *exec) Result {
	repd := x.cdb[2]&0x80 != 0
	alloc := binary.BigEndian.Uint32(x.cdb[6:])
	if alloc < 4 {
		return checkCondition(invalidCDB(6, -1))
	}
	b := make([]byte, 4)
	if repd {
		b = make([]byte, 16)
		b[3] = 0x0c // ADDITIONAL DATA LENGTH
	}
	b[0] = 0x80 | 0x40 | 0x10 | 0x08 | 0x02 // ATS ATSS CTSS LURS TRS
	return x.dataIn(b, alloc)
}

// cmdStartStopUnit runs START STOP UNIT (SBC-3 5.20). The disk is not removable: LOEJ has no medium to
// eject and is ignored. With POWER CONDITION 0, START=0 stops the unit (flushing unless NO_FLUSH) and
// medium access then reports NOT READY until START=1; other power conditions only name a power state,
// which a gateway does not have, and change nothing.
func cmdStartStopUnit(x *exec) Result {
	pc := x.cdb[4] >> 4
	noFlush := x.cdb[4]&0x04 != 0
	start := x.cdb[4]&0x01 != 0
	if pc != 0 {
		return Result{}
	}
	if start {
		x.lu.stopped.Store(false)
		return Result{}
	}
	if !noFlush {
		if err := x.lu.dev.Flush(); err != nil {
			return checkCondition(newSense(SenseMediumError, ASCWriteError))
		}
	}
	x.lu.stopped.Store(true)
	return Result{}
}

// cmdPreventAllow runs PREVENT ALLOW MEDIUM REMOVAL (SBC-3 5.12). The medium is not removable, so
// preventing removal changes nothing; the obsolete values 10b and 11b are refused.
func cmdPreventAllow(x *exec) Result {
	if x.cdb[4]&0x02 != 0 {
		return checkCondition(invalidCDB(4, 1))
	}
	return Result{}
}

// SANITIZE service actions (SBC-3 5.19).
const (
	sanitizeOverwrite  = 0x01
	sanitizeBlockErase = 0x02
	sanitizeExitFail   = 0x1f

	ascSanitizeInProgress = 0x041B // NOT READY, SANITIZE IN PROGRESS
	ascSanitizeFailed     = 0x3103 // MEDIUM ERROR, SANITIZE COMMAND FAILED
)

// cmdSanitize runs SANITIZE OVERWRITE (the pattern over every block, OWCOUNT passes, INVERT between
// passes), BLOCK ERASE (discard of the whole medium: blocks then read zeros and are deallocated) and
// EXIT FAILURE MODE. CRYPTOGRAPHIC ERASE is not supported.
//
// As SBC-3 4.11 requires, the operation, once started, runs to its end whatever happens to the command
// (ABORT TASK, resets): it runs in its own goroutine, and until it ends every command but INQUIRY,
// REPORT LUNS and REQUEST SENSE gets NOT READY, SANITIZE IN PROGRESS. With IMMED the status comes right
// after the parameters are checked. If it fails, medium access reports SANITIZE COMMAND FAILED until a
// SANITIZE succeeds or EXIT FAILURE MODE is sent.
func cmdSanitize(x *exec) Result {
	sa := x.cdb[1] & 0x1f
	immed := x.cdb[1]&0x80 != 0
	plen := int(binary.BigEndian.Uint16(x.cdb[7:]))
	if s := x.writable(); s != nil {
		return checkCondition(s)
	}
	var pattern []byte
	var invert bool
	var count int
	switch sa {
	case sanitizeExitFail, sanitizeBlockErase:
		if plen != 0 {
			return checkCondition(invalidCDB(7, -1))
		}
		if sa == sanitizeExitFail {
			x.lu.sanitizeFailed.Store(false)
			return Result{}
		}
	default:
		// OVERWRITE parameter list (SBC-3 5.19.3): byte 0 INVERT (7), TEST (5-4), OWCOUNT (3-0); bytes 2-3
		// INITIALIZATION PATTERN LENGTH; then the pattern.
		if plen < 4 {
			x.wanted = plen
			return checkCondition(invalidCDB(7, -1))
		}
		p, s := x.dataOut(plen)
		if s != nil {
			return checkCondition(s)
		}
		invert = p[0]&0x80 != 0
		count = int(p[0] & 0x0f)
		patLen := int(binary.BigEndian.Uint16(p[2:]))
		if p[0]&0x30 != 0 {
			return checkCondition(invalidParam(0, 5))
		}
		if count == 0 {
			return checkCondition(invalidParam(0, 3))
		}
		if patLen == 0 || patLen > x.lu.bs {
			return checkCondition(invalidParam(2, -1))
		}
		if plen != 4+patLen {
			return checkCondition(invalidCDB(7, -1))
		}
		pattern = make([]byte, x.lu.bs) // a copy: the data-out buffer is the transport's once we return
		for i := 0; i < len(pattern); i += patLen {
			copy(pattern[i:], p[4:4+patLen])
		}
	}
	if !x.lu.sanitizing.CompareAndSwap(false, true) {
		return checkCondition(newSense(SenseNotReady, ascSanitizeInProgress))
	}
	done := make(chan Result, 1)
	l := x.lu
	go func() {
		r := l.sanitize(sa, pattern, invert, count)
		l.sanitizeFailed.Store(r.Status != StatusGood)
		if sa == sanitizeBlockErase && r.Status == StatusGood {
			l.deallocated.Store(true) // nothing can have written since: every other command was refused
		}
		l.sanitizing.Store(false)
		done <- r
	}()
	if immed {
		return Result{}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			return r
		case <-tick.C:
			if x.stopped() {
				return Result{Aborted: true} // the operation itself carries on
			}
		}
	}
}

// sanitize carries out a SANITIZE operation over the whole medium and makes it durable.
func (l *lu) sanitize(sa byte, pattern []byte, invert bool, count int) Result {
	never := func() bool { return false }
	total := int64(l.blocks) * int64(l.bs)
	if sa == sanitizeBlockErase {
		if r := l.discard(0, total, never); r.Status != StatusGood {
			return r
		}
	} else {
		for pass := 0; pass < count; pass++ {
			p := pattern
			if invert && pass%2 == 1 {
				p = make([]byte, len(pattern))
				for i := range p {
					p[i] = ^pattern[i]
				}
			}
			if r := l.overwritePaced(total, p, never); r.Status != StatusGood {
				return r
			}
		}
	}
	if err := l.dev.Flush(); err != nil {
		return checkCondition(newSense(SenseMediumError, ASCWriteError))
	}
	return Result{}
}

// sanitizeOverwriteRate bounds SANITIZE OVERWRITE, in bytes per second. The disks under a LUN are shared
// by every other server's LUN on the appliance, so a wipe runs as a background job at about the speed of a
// single hard disk rather than saturating the array; 1 GiB takes 8 s a pass.
const sanitizeOverwriteRate = 128 << 20

// sanitizeOverwriteChunk is the unit of paced overwrite, in bytes.
const sanitizeOverwriteChunk = 8 << 20

// overwritePaced writes pattern over [0, total) in chunks, sleeping between them so that the whole pass
// takes at least total/sanitizeOverwriteRate seconds.
func (l *lu) overwritePaced(total int64, pattern []byte, stop func() bool) Result {
	start := time.Now()
	for off := int64(0); off < total; off += sanitizeOverwriteChunk {
		n := min(total-off, sanitizeOverwriteChunk)
		if r := l.fill(off, n, pattern, false, stop); r.Status != StatusGood {
			return r
		}
		due := start.Add(time.Duration(float64(off+n) / sanitizeOverwriteRate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
	}
	return Result{}
}

// cmdReadDefectData runs READ DEFECT DATA(10) and (12) (SBC-3 5.17, 5.18): a virtual disk has no
// defects, so both lists are valid and empty, in the format asked for.
func cmdReadDefectData(x *exec) Result {
	var b []byte
	var alloc uint32
	if x.cdb[0] == 0x37 {
		req := x.cdb[2] & 0x1f // REQ_PLIST (4), REQ_GLIST (3), DEFECT LIST FORMAT (2-0)
		alloc = uint32(binary.BigEndian.Uint16(x.cdb[7:]))
		b = make([]byte, 4)
		b[1] = req // PLISTV and GLISTV sit where REQ_PLIST and REQ_GLIST sit in the CDB
	} else {
		req := x.cdb[1] & 0x1f
		alloc = binary.BigEndian.Uint32(x.cdb[6:])
		b = make([]byte, 8)
		b[1] = req
	}
	return x.dataIn(b, alloc)
}

// targetPortGroup is the one target port group every port of the target belongs to.
const targetPortGroup = 1

// cmdReportTargetPortGroups runs REPORT TARGET PORT GROUPS (SPC-4 6.27): implicit ALUA with a single
// group, active/optimized, holding every relative target port the target has seen a nexus on.
func cmdReportTargetPortGroups(x *exec) Result {
	alloc := binary.BigEndian.Uint32(x.cdb[6:])
	extended := x.cdb[1]>>5 == 1
	ports := x.t.targetPorts(x.nexus.RelativeTargetPort)
	var b []byte
	if extended {
		b = make([]byte, 8)
		b[4] = 0x10 // FORMAT TYPE 001b: extended header
		b[5] = 0    // IMPLICIT TRANSITION TIME: none needed
	} else {
		b = make([]byte, 4)
	}
	d := make([]byte, 8, 8+4*len(ports))
	d[0] = 0x80 | 0x0 // PREF, ASYMMETRIC ACCESS STATE active/optimized
	d[1] = 0x01       // AO_SUP: only active/optimized is ever reported
	binary.BigEndian.PutUint16(d[2:], targetPortGroup)
	d[7] = byte(len(ports))
	for _, p := range ports {
		d = append(d, 0, 0, byte(p>>8), byte(p))
	}
	b = append(b, d...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return x.dataIn(b, alloc)
}
