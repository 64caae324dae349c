package scsi

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
)

// Reservations: SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations (5.9), kept in memory. APTPL
// (persist through power loss) is not supported, and REPORT CAPABILITIES says so; ALL_TG_PT and
// SPEC_I_PT are not supported either. State lives per LU; registrations are per I_T nexus.

// Persistent reservation types (SPC-4 table 211).
const (
	prWriteExclusive         = 0x1
	prExclusiveAccess        = 0x3
	prWriteExclusiveRegOnly  = 0x5
	prExclusiveAccessRegOnly = 0x6
	prWriteExclusiveAllReg   = 0x7
	prExclusiveAccessAllReg  = 0x8
)

// Unit attentions and sense codes of reservations.
const (
	ascReservationsPreempted  = 0x2A03
	ascReservationsReleased   = 0x2A04
	ascRegistrationsPreempted = 0x2A05
	ascInvalidRelease         = 0x2604 // INVALID RELEASE OF PERSISTENT RESERVATION
)

// prClass says how a command fares against a reservation it does not hold (SPC-4 5.9.1 tables).
type prClass uint8

const (
	prAllowed prClass = iota // INQUIRY, REPORT LUNS, PERSISTENT RESERVE IN/OUT, ...: never conflicts
	prRead                   // reads: conflict under the exclusive-access types only
	prWrite                  // writes and state changes: conflict under every type
)

type resvState struct {
	active atomic.Bool // anything reserved or registered: the hot-path test
	mu     sync.Mutex

	spc2       bool  // an SPC-2 reservation is held
	spc2Holder Nexus // by this nexus

	gen       uint32
	regs      map[Nexus]uint64
	hasRes    bool
	resType   byte
	resHolder Nexus // for the all-registrants types every registrant holds it
}

func (r *resvState) update() {
	r.active.Store(r.spc2 || len(r.regs) > 0 || r.hasRes)
}

func allRegistrants(t byte) bool { return t == prWriteExclusiveAllReg || t == prExclusiveAccessAllReg }

// holder reports whether n holds the persistent reservation. Call with mu held.
func (r *resvState) holder(n Nexus) bool {
	if !r.hasRes {
		return false
	}
	if allRegistrants(r.resType) {
		_, ok := r.regs[n]
		return ok
	}
	return r.resHolder == n
}

// conflicts reports whether a command of class c, flagged spc2OK or not, from n must get RESERVATION
// CONFLICT.
func (r *resvState) conflicts(n Nexus, c prClass, spc2OK bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.spc2 && r.spc2Holder != n && !spc2OK {
		return true
	}
	if !r.hasRes || c == prAllowed || r.holder(n) {
		return false
	}
	_, registered := r.regs[n]
	switch r.resType {
	case prWriteExclusive:
		return c == prWrite
	case prExclusiveAccess:
		return true
	case prWriteExclusiveRegOnly, prWriteExclusiveAllReg:
		return c == prWrite && !registered
	default: // exclusive access, registrants only / all registrants
		return !registered
	}
}

// nexusGone drops the SPC-2 reservation of n (persistent ones survive I_T nexus loss).
func (r *resvState) nexusGone(n Nexus) {
	r.mu.Lock()
	if r.spc2 && r.spc2Holder == n {
		r.spc2 = false
	}
	r.update()
	r.mu.Unlock()
}

// reset drops the SPC-2 reservation (LUN reset, target reset) and, on a cold reset (power on), every
// persistent registration and reservation too, since APTPL is not supported.
func (r *resvState) reset(cold bool) {
	r.mu.Lock()
	r.spc2 = false
	if cold {
		r.regs, r.hasRes = nil, false
	}
	r.update()
	r.mu.Unlock()
}

func reservationConflict() Result { return Result{Status: StatusReservationConflict} }

// cmdReserve runs RESERVE(6) and RESERVE(10) (SPC-2 7.21): an exclusive reservation for the nexus.
func cmdReserve(x *exec) Result {
	r := &x.lu.resv
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.regs) > 0 || r.hasRes || (r.spc2 && r.spc2Holder != x.nexus) {
		return reservationConflict()
	}
	r.spc2, r.spc2Holder = true, x.nexus
	r.update()
	return Result{}
}

// cmdRelease runs RELEASE(6) and RELEASE(10): releases the nexus's own reservation; anything else is a
// no-op (SPC-2 7.17).
func cmdRelease(x *exec) Result {
	r := &x.lu.resv
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.spc2 && r.spc2Holder == x.nexus {
		r.spc2 = false
		r.update()
	}
	return Result{}
}

// PERSISTENT RESERVE IN service actions (SPC-4 6.13).
const (
	prinReadKeys        = 0
	prinReadReservation = 1
	prinReportCaps      = 2
	prinReadFullStatus  = 3
)

func cmdPRIn(x *exec) Result {
	alloc := uint32(binary.BigEndian.Uint16(x.cdb[7:]))
	r := &x.lu.resv
	r.mu.Lock()
	defer r.mu.Unlock()
	var b []byte
	switch x.cdb[1] & 0x1f {
	case prinReadKeys:
		b = make([]byte, 8, 8+8*len(r.regs))
		binary.BigEndian.PutUint32(b, r.gen)
		for _, n := range sortedNexuses(r.regs) {
			b = binary.BigEndian.AppendUint64(b, r.regs[n])
		}
		binary.BigEndian.PutUint32(b[4:], uint32(len(b)-8))
	case prinReadReservation:
		b = make([]byte, 8)
		binary.BigEndian.PutUint32(b, r.gen)
		if r.hasRes {
			d := make([]byte, 16)
			if !allRegistrants(r.resType) {
				binary.BigEndian.PutUint64(d, r.regs[r.resHolder])
			}
			d[13] = r.resType // SCOPE 0 (logical unit) in bits 7-4
			b = append(b, d...)
			binary.BigEndian.PutUint32(b[4:], 16)
		}
	case prinReportCaps:
		b = make([]byte, 8)
		binary.BigEndian.PutUint16(b, 8)
		b[2] = 0x10                             // CRH: RESERVE/RELEASE succeed... conflict rules of SPC-4 5.9.3 (compatible reservation handling)
		b[3] = 0x80                             // TMV: the type mask is valid; ALLOW COMMANDS 0; PTPL_A 0
		b[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02 // WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX
		b[5] = 0x01                             // EX_AC_AR
	case prinReadFullStatus:
		b = make([]byte, 8)
		binary.BigEndian.PutUint32(b, r.gen)
		for _, n := range sortedNexuses(r.regs) {
			tid := transportID(n)
			d := make([]byte, 24, 24+len(tid))
			binary.BigEndian.PutUint64(d, r.regs[n])
			if r.holder(n) {
				d[12] = 0x01 // R_HOLDER
				d[13] = r.resType
			}
			binary.BigEndian.PutUint16(d[18:], max(n.RelativeTargetPort, 1))
			binary.BigEndian.PutUint32(d[20:], uint32(len(tid)))
			b = append(append(b, d...), tid...)
		}
		binary.BigEndian.PutUint32(b[4:], uint32(len(b)-8))
	}
	return x.dataIn(b, alloc)
}

// transportID is the iSCSI TransportID of an initiator port (SPC-4 7.6.4.6): format 01b with the
// "name,i,0xISID" string, NUL-terminated, padded to a multiple of 4.
func transportID(n Nexus) []byte {
	name := scsiName(n.InitiatorPort)
	b := make([]byte, 4, 4+len(name))
	b[0] = 0x40 | protoISCSI
	binary.BigEndian.PutUint16(b[2:], uint16(len(name)))
	return append(b, name...)
}

func sortedNexuses(m map[Nexus]uint64) []Nexus {
	out := make([]Nexus, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	// Deterministic order: by initiator port, then target port.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && lessNexus(out[j], out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func lessNexus(a, b Nexus) bool {
	if a.InitiatorPort != b.InitiatorPort {
		return a.InitiatorPort < b.InitiatorPort
	}
	return a.RelativeTargetPort < b.RelativeTargetPort
}

// PERSISTENT RESERVE OUT service actions (SPC-4 6.14) and parameter list layout.
const (
	proutRegister            = 0
	proutReserve             = 1
	proutRelease             = 2
	proutClear               = 3
	proutPreempt             = 4
	proutPreemptAbort        = 5
	proutRegisterIgnore      = 6
	proutParamLen            = 24
	proutOffKey              = 0  // RESERVATION KEY
	proutOffSAKey            = 8  // SERVICE ACTION RESERVATION KEY
	proutOffFlags            = 20 // SPEC_I_PT (3), ALL_TG_PT (2), APTPL (0)
	proutFlagSpecIPT    byte = 0x08
	proutFlagAllTgPt    byte = 0x04
	proutFlagAPTPL      byte = 0x01
)

func validPRType(t byte) bool {
	switch t {
	case prWriteExclusive, prExclusiveAccess, prWriteExclusiveRegOnly, prExclusiveAccessRegOnly,
		prWriteExclusiveAllReg, prExclusiveAccessAllReg:
		return true
	}
	return false
}

func cmdPROut(x *exec) Result {
	sa := x.cdb[1] & 0x1f
	scope, typ := x.cdb[2]>>4, x.cdb[2]&0x0f
	plen := int(binary.BigEndian.Uint32(x.cdb[5:]))
	if plen != proutParamLen {
		x.wanted = plen
		return checkCondition(paramListLength())
	}
	p, s := x.dataOut(plen)
	if s != nil {
		return checkCondition(s)
	}
	key := binary.BigEndian.Uint64(p[proutOffKey:])
	saKey := binary.BigEndian.Uint64(p[proutOffSAKey:])
	flags := p[proutOffFlags]
	switch {
	case flags&proutFlagSpecIPT != 0:
		return checkCondition(invalidParam(proutOffFlags, 3))
	case flags&proutFlagAllTgPt != 0:
		return checkCondition(invalidParam(proutOffFlags, 2))
	case flags&proutFlagAPTPL != 0:
		return checkCondition(invalidParam(proutOffFlags, 0))
	}
	if (sa == proutReserve || sa == proutRelease || sa == proutPreempt || sa == proutPreemptAbort) && scope != 0 {
		return checkCondition(invalidCDB(2, 7))
	}

	r := &x.lu.resv
	r.mu.Lock()
	var preempted []Nexus
	res := func() Result {
		if r.spc2 && r.spc2Holder != x.nexus {
			return reservationConflict()
		}
		if r.regs == nil {
			r.regs = map[Nexus]uint64{}
		}
		cur, registered := r.regs[x.nexus]
		if sa != proutRegisterIgnore && sa != proutRegister && (!registered || cur != key) {
			return reservationConflict()
		}
		switch sa {
		case proutRegister, proutRegisterIgnore:
			if sa == proutRegister && (registered && cur != key || !registered && key != 0) {
				return reservationConflict()
			}
			if saKey == 0 {
				if registered {
					r.unregister(x.t, x.lu.lun, x.nexus)
					r.gen++
				}
				return Result{}
			}
			r.regs[x.nexus] = saKey
			r.gen++
		case proutReserve:
			if !validPRType(typ) {
				return checkCondition(invalidCDB(2, 3))
			}
			if r.hasRes {
				if !r.holder(x.nexus) || r.resType != typ {
					return reservationConflict()
				}
				return Result{}
			}
			r.hasRes, r.resType, r.resHolder = true, typ, x.nexus
		case proutRelease:
			if !r.hasRes || !r.holder(x.nexus) {
				return Result{}
			}
			if r.resType != typ {
				return checkCondition(newSense(SenseIllegalRequest, ascInvalidRelease))
			}
			r.release(x.t, x.lu.lun, x.nexus)
		case proutClear:
			for n := range r.regs {
				if n != x.nexus {
					x.t.uaNexus(n, x.lu.lun, ascReservationsPreempted)
				}
			}
			r.regs, r.hasRes = map[Nexus]uint64{}, false
			r.gen++
		case proutPreempt, proutPreemptAbort:
			if !validPRType(typ) {
				return checkCondition(invalidCDB(2, 3))
			}
			var ok bool
			preempted, ok = r.preempt(x, saKey, typ)
			if !ok {
				if saKey == 0 {
					return checkCondition(invalidParam(proutOffSAKey, -1))
				}
				return reservationConflict()
			}
			r.gen++
		}
		return Result{}
	}()
	r.update()
	r.mu.Unlock()
	if sa == proutPreemptAbort && len(preempted) > 0 {
		// Tasks of the preempted nexuses stop; never our own (we are one of the tasks running here).
		abortWhere(x.lu, func(k taskKey) bool {
			for _, n := range preempted {
				if k.nexus == n && n != x.nexus {
					return true
				}
			}
			return false
		})
	}
	return res
}

// unregister removes n's registration; a reservation n held alone goes with it (SPC-4 5.9.11). Call with
// mu held.
func (r *resvState) unregister(t *Target, lun uint64, n Nexus) {
	holder := r.holder(n)
	delete(r.regs, n)
	if !r.hasRes || !holder {
		return
	}
	if allRegistrants(r.resType) {
		if len(r.regs) == 0 {
			r.hasRes = false
		}
		return
	}
	r.release(t, lun, n)
}

// release drops the reservation; for the registrants-only and all-registrants types the other registrants
// learn it through RESERVATIONS RELEASED (SPC-4 5.9.10.2). Call with mu held.
func (r *resvState) release(t *Target, lun uint64, by Nexus) {
	typ := r.resType
	r.hasRes = false
	if typ == prWriteExclusive || typ == prExclusiveAccess {
		return
	}
	for n := range r.regs {
		if n != by {
			t.uaNexus(n, lun, ascReservationsReleased)
		}
	}
}

// preempt carries out PREEMPT (SPC-4 5.9.11.4): it returns the nexuses whose registrations it removed and
// false when the service action key matched nothing (or was zero where that is not allowed). Call with
// mu held.
func (r *resvState) preempt(x *exec, saKey uint64, typ byte) ([]Nexus, bool) {
	var gone []Nexus
	remove := func(match func(Nexus, uint64) bool) {
		for n, k := range r.regs {
			if n != x.nexus && match(n, k) {
				gone = append(gone, n)
			}
		}
		for _, n := range gone {
			delete(r.regs, n)
			x.t.uaNexus(n, x.lu.lun, ascRegistrationsPreempted)
		}
	}
	switch {
	case r.hasRes && allRegistrants(r.resType):
		if saKey == 0 {
			// Every other registration goes and the preempting nexus takes the reservation.
			remove(func(Nexus, uint64) bool { return true })
			r.resType, r.resHolder = typ, x.nexus
			return gone, true
		}
		remove(func(_ Nexus, k uint64) bool { return k == saKey })
		return gone, len(gone) > 0 || r.regs[x.nexus] == saKey
	case r.hasRes && r.regs[r.resHolder] == saKey:
		remove(func(_ Nexus, k uint64) bool { return k == saKey })
		r.resType, r.resHolder = typ, x.nexus
		return gone, true
	default:
		if saKey == 0 {
			return nil, false
		}
		remove(func(_ Nexus, k uint64) bool { return k == saKey })
		return gone, len(gone) > 0 || r.regs[x.nexus] == saKey
	}
}

// uaNexus queues asc for lun on nexus n if the target knows it.
func (t *Target) uaNexus(n Nexus, lun uint64, asc uint16) {
	if v, ok := t.nx.Load(n); ok {
		v.(*nexusState).addUA(lun, asc)
	}
}
