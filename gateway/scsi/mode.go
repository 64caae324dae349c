package scsi

import "encoding/binary"

// Mode pages (SPC-4 7.5, SBC-3 6.4). Each page is built for a page control: current, changeable (a mask of
// the bits MODE SELECT may change) or default. Saved values are not supported.
const (
	pcCurrent    = 0
	pcChangeable = 1
	pcDefault    = 2
	pcSaved      = 3

	pageCaching    = 0x08
	pageControl    = 0x0a
	pageInfoExcept = 0x1c
	pageAll        = 0x3f

	cachingWCE = 0x04 // caching page byte 2
	controlSWP = 0x08 // control page byte 4
	devSpecWP  = 0x80 // mode parameter header DEVICE-SPECIFIC PARAMETER: write protected
	devSpecDPO = 0x10 // DPOFUA: DPO and FUA are supported
)

var modePages = []byte{pageCaching, pageControl, pageInfoExcept} // ascending, as "return all" reports them

// modePage returns page code for page control pc, or nil for an unsupported page.
func (l *lu) modePage(code byte, pc int) []byte {
	var b []byte
	switch code {
	case pageCaching:
		b = make([]byte, 2+0x12)
		switch pc {
		case pcCurrent:
			if l.wce.Load() {
				b[2] = cachingWCE
			}
		case pcChangeable:
			b[2] = cachingWCE
		case pcDefault:
			b[2] = cachingWCE
		}
	case pageControl:
		b = make([]byte, 2+0x0a)
		switch pc {
		case pcCurrent, pcDefault:
			b[3] = 0x10 // QUEUE ALGORITHM MODIFIER 1: commands may be reordered
			if pc == pcCurrent && l.swp.Load() {
				b[4] = controlSWP
			}
			binary.BigEndian.PutUint16(b[8:], 0xffff) // BUSY TIMEOUT PERIOD: unlimited
		case pcChangeable:
			b[4] = controlSWP
		}
	case pageInfoExcept:
		b = make([]byte, 2+0x0a)
		if pc != pcChangeable {
			b[2] = 0x08 // DEXCPT: no informational exceptions are reported
		}
	default:
		return nil
	}
	b[0] = code
	b[1] = byte(len(b) - 2)
	return b
}

// cmdModeSense runs MODE SENSE(6) and MODE SENSE(10).
func cmdModeSense(x *exec) Result {
	ten := x.cdb[0] == 0x5a
	dbd := x.cdb[1]&0x08 != 0
	llbaa := ten && x.cdb[1]&0x10 != 0
	pc := int(x.cdb[2] >> 6)
	page := x.cdb[2] & 0x3f
	sub := x.cdb[3]
	var alloc uint32
	if ten {
		alloc = uint32(binary.BigEndian.Uint16(x.cdb[7:]))
	} else {
		alloc = uint32(x.cdb[4])
	}
	if pc == pcSaved {
		return checkCondition(newSense(SenseIllegalRequest, ASCSavingParamsNotSupported))
	}
	var pages []byte
	switch {
	case page == pageAll && (sub == 0 || sub == 0xff):
		for _, p := range modePages {
			pages = append(pages, x.lu.modePage(p, pc)...)
		}
	case sub != 0 && sub != 0xff:
		return checkCondition(invalidCDB(3, -1))
	default:
		// Subpage 0xFF of a page without subpages is that page alone (SPC-4 6.11).
		p := x.lu.modePage(page, pc)
		if p == nil {
			return checkCondition(invalidCDB(2, 5))
		}
		pages = p
	}
	var bd []byte
	if !dbd {
		if llbaa {
			bd = make([]byte, 16)
			binary.BigEndian.PutUint64(bd, x.lu.blocks)
			binary.BigEndian.PutUint32(bd[12:], uint32(x.lu.bs))
		} else {
			bd = make([]byte, 8)
			binary.BigEndian.PutUint32(bd, uint32(min(x.lu.blocks, 0xffffffff)))
			binary.BigEndian.PutUint32(bd[4:], uint32(x.lu.bs)) // byte 4 is DENSITY CODE 0, then 24-bit length
		}
	}
	dev := byte(devSpecDPO)
	if x.lu.readOnly || x.lu.swp.Load() {
		dev |= devSpecWP
	}
	var b []byte
	if ten {
		b = make([]byte, 8, 8+len(bd)+len(pages))
		b[3] = dev
		if llbaa && !dbd {
			b[4] = 0x01 // LONGLBA
		}
		binary.BigEndian.PutUint16(b[6:], uint16(len(bd)))
		b = append(append(b, bd...), pages...)
		binary.BigEndian.PutUint16(b, uint16(len(b)-2))
	} else {
		b = make([]byte, 4, 4+len(bd)+len(pages))
		b[2] = dev
		b[3] = byte(len(bd))
		b = append(append(b, bd...), pages...)
		if len(b)-1 > 0xff {
			b = b[:0x100]
		}
		b[0] = byte(len(b) - 1)
	}
	return x.dataIn(b, alloc)
}

// cmdModeSelect runs MODE SELECT(6) and MODE SELECT(10) (SPC-4 6.9, 6.10). Every page is checked before
// any change is applied; a change to a bit the changeable mask does not allow is INVALID FIELD IN
// PARAMETER LIST pointing at it. Other nexuses get MODE PARAMETERS CHANGED.
func cmdModeSelect(x *exec) Result {
	ten := x.cdb[0] == 0x55
	if x.cdb[1]&0x10 == 0 { // PF: only the standard page format is understood
		return checkCondition(invalidCDB(1, 4))
	}
	if x.cdb[1]&0x01 != 0 { // SP: saved pages are not supported
		return checkCondition(invalidCDB(1, 0))
	}
	var plen, hlen int
	if ten {
		plen, hlen = int(binary.BigEndian.Uint16(x.cdb[7:])), 8
	} else {
		plen, hlen = int(x.cdb[4]), 4
	}
	if plen == 0 {
		return Result{}
	}
	p, s := x.dataOut(plen)
	if s != nil {
		return checkCondition(s)
	}
	if plen < hlen {
		return checkCondition(paramListLength())
	}
	var bdlen int
	if ten {
		bdlen = int(binary.BigEndian.Uint16(p[6:]))
	} else {
		bdlen = int(p[3])
	}
	long := ten && p[4]&0x01 != 0
	switch {
	case bdlen == 0:
	case !long && bdlen == 8, long && bdlen == 16:
	default:
		if ten {
			return checkCondition(invalidParam(6, -1))
		}
		return checkCondition(invalidParam(3, -1))
	}
	if hlen+bdlen > plen {
		return checkCondition(paramListLength())
	}
	if bdlen > 0 {
		bd := p[hlen : hlen+bdlen]
		var blocks uint64
		var bl uint32
		if long {
			blocks, bl = binary.BigEndian.Uint64(bd), binary.BigEndian.Uint32(bd[12:])
		} else {
			blocks, bl = uint64(binary.BigEndian.Uint32(bd)), binary.BigEndian.Uint32(bd[4:])&0xffffff
		}
		if bl != uint32(x.lu.bs) {
			return checkCondition(invalidParam(hlen+bdlen-3, -1))
		}
		if blocks != 0 && blocks != min(x.lu.blocks, 0xffffffff) && blocks != x.lu.blocks {
			return checkCondition(invalidParam(hlen, -1))
		}
	}

	x.lu.modeMu.Lock()
	defer x.lu.modeMu.Unlock()
	wce, swp := x.lu.wce.Load(), x.lu.swp.Load()
	for off := hlen + bdlen; off < plen; {
		if plen-off < 2 {
			return checkCondition(paramListLength())
		}
		code := p[off] & 0x3f
		if p[off]&0x40 != 0 { // SPF: no subpages are supported
			return checkCondition(invalidParam(off, 6))
		}
		cur := x.lu.modePage(code, pcCurrent)
		if cur == nil {
			return checkCondition(invalidParam(off, 5))
		}
		if int(p[off+1]) != len(cur)-2 {
			return checkCondition(invalidParam(off+1, -1))
		}
		if off+len(cur) > plen {
			return checkCondition(paramListLength())
		}
		mask := x.lu.modePage(code, pcChangeable)
		page := p[off : off+len(cur)]
		for i := 2; i < len(cur); i++ {
			if bad := (page[i] ^ cur[i]) &^ mask[i]; bad != 0 {
				return checkCondition(invalidParam(off+i, firstBadBit(bad)))
			}
		}
		switch code {
		case pageCaching:
			wce = page[2]&cachingWCE != 0
		case pageControl:
			swp = page[4]&controlSWP != 0
		}
		off += len(cur)
	}
	if wce != x.lu.wce.Load() || swp != x.lu.swp.Load() {
		if wce && !x.lu.wce.Load() {
			// Turning the write cache on needs nothing; turning it off must not leave older writes volatile.
		} else if !wce {
			if err := x.lu.dev.Flush(); err != nil {
				return checkCondition(newSense(SenseMediumError, ASCWriteError))
			}
		}
		x.lu.wce.Store(wce)
		x.lu.swp.Store(swp)
		x.t.uaOthers(&x.nexus, x.lu.lun, ASCModeParametersChanged)
	}
	return Result{}
}
