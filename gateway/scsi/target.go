package scsi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"opensan/gateway/block"
)

// LUConfig describes one logical unit.
type LUConfig struct {
	Device   block.Device
	ReadOnly bool
	// Serial is the unit serial number (VPD 0x80) and the seed of the NAA designator (VPD 0x83); it must be
	// stable across restarts and unique per appliance. Empty: derived from the target name and LUN.
	Serial string
	// Vendor (8), Product (16) and Revision (4) for INQUIRY, space-padded; empty means the product's own.
	Vendor, Product, Revision string
}

// INQUIRY identity defaults.
const (
	DefaultVendor   = "OPENSAN "
	DefaultProduct  = "iSCSI Disk      "
	DefaultRevision = "0001"
)

// Target is a SCSI target device: a set of logical units and the tasks running on them.
//
// THIS FILE IS THE CONTRACT between the transport and the SCSI core; the implementation fills in the
// bodies. Every method is safe for concurrent use.
type Target struct {
	name string

	mu      sync.Mutex              // serialises changes to the LU table
	lus     atomic.Pointer[luTable] // copy-on-write: Execute reads it without a lock
	nx      sync.Map                // Nexus -> *nexusState
	cls     atomic.Bool             // Close was called
	running atomic.Int64            // Execute calls in progress, for Close
	copies  copyResults             // EXTENDED COPY results held for RECEIVE COPY RESULTS
}

type luTable struct {
	byLUN map[uint64]*lu
	luns  []uint64 // ascending
}

// nexusState is what the target remembers about one I_T nexus: its pending unit attentions per LUN.
type nexusState struct {
	pending atomic.Int32 // number of queued unit attentions over every LUN: the hot-path test
	mu      sync.Mutex
	ua      map[uint64][]uint16 // LUN -> queued ASC/ASCQ, oldest first
}

// maxUAQueue bounds the unit attentions kept per nexus and LUN; older ones are dropped (SAM-5 allows
// discarding when the queue overflows).
const maxUAQueue = 8

// NewTarget returns a target with no logical units. name is the SCSI target name (for iSCSI the IQN), used
// in VPD 0x83 designators.
func NewTarget(name string) *Target {
	t := &Target{name: name}
	t.lus.Store(&luTable{byLUN: map[uint64]*lu{}})
	return t
}

// Name returns the target name.
func (t *Target) Name() string { return t.name }

// AddLU adds a logical unit at lun. Other nexuses get a REPORTED LUNS DATA HAS CHANGED unit attention.
func (t *Target) AddLU(lun uint64, cfg LUConfig) error {
	if lun >= 1<<14 {
		return fmt.Errorf("scsi: LUN %d beyond the flat/peripheral addressing range (16383)", lun)
	}
	l, err := newLU(t.name, lun, cfg)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.lus.Load()
	if _, dup := old.byLUN[lun]; dup {
		return fmt.Errorf("scsi: LUN %d already exists", lun)
	}
	nt := &luTable{byLUN: make(map[uint64]*lu, len(old.byLUN)+1), luns: append(slices.Clone(old.luns), lun)}
	for k, v := range old.byLUN {
		nt.byLUN[k] = v
	}
	nt.byLUN[lun] = l
	slices.Sort(nt.luns)
	t.lus.Store(nt)
	// Every nexus already known learns that the LUN inventory changed, through each LUN it can reach.
	t.nx.Range(func(_, v any) bool {
		ns := v.(*nexusState)
		for _, other := range old.luns {
			ns.addUA(other, ASCReportedLUNsDataChanged)
		}
		// The new LU has been "powered on" as far as this nexus is concerned.
		ns.addUA(lun, ASCPowerOnResetOccurred)
		return true
	})
	return nil
}

// LUNs lists the LUNs nexus n may see, ascending.
func (t *Target) LUNs(n *Nexus) []uint64 { return slices.Clone(t.lus.Load().luns) }

func (t *Target) lookup(lun uint64) *lu { return t.lus.Load().byLUN[lun] }

func nexusKey(n *Nexus) Nexus {
	if n == nil {
		return Nexus{}
	}
	return *n
}

// nexus returns the state of nexus k, creating it on first sight with a POWER ON, RESET, OR BUS DEVICE
// RESET OCCURRED unit attention on every LUN (SAM-5 6.3: a new I_T nexus starts with one).
func (t *Target) nexus(k Nexus) *nexusState {
	if v, ok := t.nx.Load(k); ok {
		return v.(*nexusState)
	}
	ns := &nexusState{ua: map[uint64][]uint16{}}
	for _, lun := range t.lus.Load().luns {
		ns.addUA(lun, ASCPowerOnResetOccurred)
	}
	v, _ := t.nx.LoadOrStore(k, ns)
	return v.(*nexusState)
}

// addUA queues asc for lun. A reset-class condition (ASC 0x29) supersedes everything queued before it
// (SAM-5 allows the device server to clear lower-priority unit attentions then); duplicates are dropped.
func (ns *nexusState) addUA(lun uint64, asc uint16) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	q := ns.ua[lun]
	if asc>>8 == 0x29 {
		ns.pending.Add(int32(-len(q)))
		q = q[:0]
	} else if slices.Contains(q, asc) {
		return
	} else if len(q) > 0 && q[0]>>8 == 0x29 {
		return // a reset is pending: it tells the initiator to re-read everything anyway
	}
	if len(q) >= maxUAQueue {
		q = q[1:]
		ns.pending.Add(-1)
	}
	ns.ua[lun] = append(q, asc)
	ns.pending.Add(1)
}

// takeUA removes and returns the oldest unit attention for lun, or 0.
func (ns *nexusState) takeUA(lun uint64) uint16 {
	if ns.pending.Load() == 0 {
		return 0
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	q := ns.ua[lun]
	if len(q) == 0 {
		return 0
	}
	asc := q[0]
	if len(q) == 1 {
		delete(ns.ua, lun)
	} else {
		ns.ua[lun] = q[1:]
	}
	ns.pending.Add(-1)
	return asc
}

// clearUA removes asc from every LUN's queue (REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED).
func (ns *nexusState) clearUA(asc uint16) {
	if ns.pending.Load() == 0 {
		return
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for lun, q := range ns.ua {
		if i := slices.Index(q, asc); i >= 0 {
			q = slices.Delete(q, i, i+1)
			ns.pending.Add(-1)
			if len(q) == 0 {
				delete(ns.ua, lun)
			} else {
				ns.ua[lun] = q
			}
		}
	}
}

// targetPorts returns the relative target ports the target has nexuses on, plus cur, ascending.
func (t *Target) targetPorts(cur uint16) []uint16 {
	ports := []uint16{max(cur, 1)}
	t.nx.Range(func(k, _ any) bool {
		if p := max(k.(Nexus).RelativeTargetPort, 1); !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
		return true
	})
	slices.Sort(ports)
	return ports
}

// uaOthers queues asc for lun on every nexus but except (nil: every nexus).
func (t *Target) uaOthers(except *Nexus, lun uint64, asc uint16) {
	t.nx.Range(func(k, v any) bool {
		if except == nil || k.(Nexus) != *except {
			v.(*nexusState).addUA(lun, asc)
		}
		return true
	})
}

// exec carries one command through its handler.
type exec struct {
	ctx   context.Context
	t     *Target
	lu    *lu // nil when the LUN does not exist (commands with opNoLU only)
	cmd   *Command
	cdb   []byte // trimmed to the operation code's CDB length
	nexus Nexus
	ns    *nexusState
	// wanted is the data-out byte count the CDB asks for (Result.DataOutWanted).
	wanted int
	task   *task // nil for commands outside the task set
}

// Execute runs cmd and returns its result. It returns early, with Result.Aborted set and no response
// due, when the task is aborted by a task management function or ctx is cancelled (the connection died).
// REPORT LUNS, INQUIRY and REQUEST SENSE work for LUNs that do not exist, as SPC requires.
//
// Task attributes: every task runs as SIMPLE, concurrently with the others; ORDERED and HEAD OF QUEUE are
// accepted but not ordered (initiators that need ordering, Linux included, do not send ORDERED). ACA is
// refused because NACA is not supported.
func (t *Target) Execute(ctx context.Context, cmd *Command) Result {
	// Count first, then look at cls: Close stores cls first, then waits for the count, so every Execute
	// either sees cls or is waited for.
	t.running.Add(1)
	defer t.running.Add(-1)
	if t.cls.Load() {
		return Result{Aborted: true}
	}

	x := exec{ctx: ctx, t: t, cmd: cmd, nexus: nexusKey(cmd.Nexus)}
	x.ns = t.nexus(x.nexus)
	x.lu = t.lookup(cmd.LUN)

	cdb := cmd.CDB
	if len(cdb) == 0 {
		return checkCondition(invalidOpcode(0, -1))
	}
	op, err := lookupOp(cdb)
	exempt := op != nil && op.flags&opNoUA != 0

	if x.lu == nil && (op == nil || op.flags&opNoLU == 0) {
		return checkCondition(newSense(SenseIllegalRequest, ASCLUNotSupported))
	}
	if x.lu != nil && !exempt {
		if asc := x.ns.takeUA(cmd.LUN); asc != 0 {
			return checkCondition(newSense(SenseUnitAttention, asc))
		}
	}
	if err != nil {
		return checkCondition(err)
	}
	if cmd.Attr == ACA {
		return checkCondition(newSense(SenseIllegalRequest, ASCInvalidFieldInCDB))
	}
	if len(cdb) < len(op.usage) {
		return checkCondition(invalidCDB(len(cdb), -1))
	}
	x.cdb = cdb[:len(op.usage)]
	if f, bit, ok := CheckUsage(x.cdb, op.usage); !ok {
		return checkCondition(invalidCDB(f, bit))
	}
	if c := x.cdb[len(x.cdb)-1]; c&(controlNACA|controlLink) != 0 {
		return checkCondition(invalidCDB(len(x.cdb)-1, firstBadBit(c&(controlNACA|controlLink))))
	}

	if x.lu != nil && !exempt && x.lu.sanitizing.Load() {
		return checkCondition(newSense(SenseNotReady, ascSanitizeInProgress))
	}
	if x.lu != nil && op.flags&opMedium != 0 && op.op != 0x48 && x.lu.sanitizeFailed.Load() {
		// Sanitize failure mode: only another SANITIZE (or EXIT FAILURE MODE) touches the medium.
		return checkCondition(newSense(SenseMediumError, ascSanitizeFailed))
	}
	if x.lu != nil && op.flags&opMedium != 0 && x.lu.stopped.Load() {
		// LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED: START STOP UNIT with START=1 is needed.
		return checkCondition(newSense(SenseNotReady, 0x0402))
	}
	if x.lu != nil && x.lu.resv.active.Load() && x.lu.resv.conflicts(x.nexus, op.pr, op.flags&opSPC2OK != 0) {
		return reservationConflict()
	}
	if x.lu == nil || op.flags&opNoTask != 0 {
		res := op.run(&x)
		res.DataOutWanted = x.wanted
		return res
	}

	// Register the task so that task management can find it, flag it and wait for it.
	tk := &task{key: taskKey{nexus: x.nexus, tag: cmd.Tag}}
	tk.done.Add(1)
	if !x.lu.tasks.add(tk) {
		// Overlapped command (SAM-5 5.10.2): same tag while the first still runs.
		return checkCondition(newSense(SenseAbortedCommand, 0x4E00))
	}
	x.task = tk
	res := op.run(&x)
	res.DataOutWanted = x.wanted
	x.lu.tasks.remove(tk)
	tk.done.Done()
	if tk.aborted.Load() || ctx.Err() != nil {
		res.Release()
		return Result{Aborted: true}
	}
	return res
}

// stopped reports whether the task was aborted or its connection went away: long commands poll it
// between chunks.
func (x *exec) stopped() bool {
	return (x.task != nil && x.task.aborted.Load()) || x.ctx.Err() != nil
}

// abortWhere aborts the tasks on l that match, waiting for them to stop.
func abortWhere(l *lu, match func(taskKey) bool) int { return l.tasks.abort(match) }

// AbortTask aborts the task tagged tag from nexus n on lun and returns after it has stopped.
func (t *Target) AbortTask(n *Nexus, lun uint64, tag uint64) TMFResponse {
	l := t.lookup(lun)
	if l == nil {
		return TMFNoSuchLUN
	}
	k := nexusKey(n)
	if abortWhere(l, func(tk taskKey) bool { return tk.nexus == k && tk.tag == tag }) == 0 {
		return TMFNoSuchTask
	}
	return TMFComplete
}

// AbortTaskSet aborts every task of nexus n on lun.
func (t *Target) AbortTaskSet(n *Nexus, lun uint64) TMFResponse {
	l := t.lookup(lun)
	if l == nil {
		return TMFNoSuchLUN
	}
	k := nexusKey(n)
	abortWhere(l, func(tk taskKey) bool { return tk.nexus == k })
	return TMFComplete
}

// ClearTaskSet aborts every task on lun, from every nexus.
func (t *Target) ClearTaskSet(n *Nexus, lun uint64) TMFResponse {
	l := t.lookup(lun)
	if l == nil {
		return TMFNoSuchLUN
	}
	abortWhere(l, func(taskKey) bool { return true })
	// SAM-5 7.4: other nexuses whose tasks were cleared learn it through a unit attention (TST=000b).
	t.uaOthers(n, lun, 0x2F00) // COMMANDS CLEARED BY ANOTHER INITIATOR
	return TMFComplete
}

// LUNReset aborts every task on lun and sets a unit attention for every nexus, the requester's included
// (SAM-5 7.6: "for the SCSI initiator port associated with every I_T nexus").
func (t *Target) LUNReset(n *Nexus, lun uint64) TMFResponse {
	l := t.lookup(lun)
	if l == nil {
		return TMFNoSuchLUN
	}
	abortWhere(l, func(taskKey) bool { return true })
	l.reset(false)
	t.uaOthers(nil, lun, ASCBusDeviceResetOccurred)
	return TMFComplete
}

// TargetReset resets every logical unit (warm) or also forgets mode pages and reservations (cold). Every
// nexus, the requester's included, gets a unit attention on every LU (SAM-5 7.7).
func (t *Target) TargetReset(n *Nexus, cold bool) TMFResponse {
	tab := t.lus.Load()
	for _, lun := range tab.luns {
		l := tab.byLUN[lun]
		abortWhere(l, func(taskKey) bool { return true })
		l.reset(cold)
		asc := uint16(ASCBusResetOccurred)
		if cold {
			asc = ASCPowerOnOccurred
		}
		t.uaOthers(nil, lun, asc)
	}
	return TMFComplete
}

// sanitizing reports whether a SANITIZE operation still runs on some LU of tab.
func (t *Target) sanitizing(tab *luTable) bool {
	for _, l := range tab.byLUN {
		if l.sanitizing.Load() {
			return true
		}
	}
	return false
}

// reset returns the LU to its state after a LUN reset (SAM-5 6.3.3): the task set is empty already;
// stopped units stay stopped. A cold reset (power on) also restores the default mode parameters.
func (l *lu) reset(cold bool) {
	l.resv.reset(cold)
	if cold {
		l.modeMu.Lock()
		l.wce.Store(true)
		l.swp.Store(false)
		l.modeMu.Unlock()
		l.stopped.Store(false)
	}
}

// NexusGone aborts the tasks of a nexus whose session ended and forgets its per-nexus state.
func (t *Target) NexusGone(n *Nexus) {
	k := nexusKey(n)
	tab := t.lus.Load()
	for _, lun := range tab.luns {
		abortWhere(tab.byLUN[lun], func(tk taskKey) bool { return tk.nexus == k })
		tab.byLUN[lun].resv.nexusGone(k)
	}
	t.copies.forget(k)
	t.nx.Delete(k)
}

// Close stops every task and flushes every logical unit's device. It does not close the devices.
func (t *Target) Close() error {
	t.cls.Store(true)
	tab := t.lus.Load()
	for _, lun := range tab.luns {
		abortWhere(tab.byLUN[lun], func(taskKey) bool { return true })
	}
	for t.running.Load() != 0 || t.sanitizing(tab) {
		// Commands that were past registration finish their current device call; poll for them.
		time.Sleep(time.Millisecond)
		for _, lun := range tab.luns {
			abortWhere(tab.byLUN[lun], func(taskKey) bool { return true })
		}
	}
	var errs []error
	for _, lun := range tab.luns {
		if err := tab.byLUN[lun].dev.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("scsi: flush LUN %d: %w", lun, err))
		}
	}
	return errors.Join(errs...)
}
