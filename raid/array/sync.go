package array

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"opensan/gateway/block"
	"opensan/raid/md"
)

// Background work (the initial sync and resyncs, rebuilds onto spares) runs on one goroutine per array,
// the sync worker, as md's sync thread: resync first, then rebuild every slot whose member is being
// recovered. Both are paced by SyncRate and give way to foreground I/O.

// SyncRate bounds background resync and rebuild, in bytes per second of member I/O (md's
// speed_limit_min and speed_limit_max).
type SyncRate struct {
	// Min is the rate kept while foreground I/O runs; DefaultMinSyncRate when 0, unlimited when negative.
	Min int64
	// Max is the rate when the array is otherwise idle; unlimited when 0.
	Max int64
}

// DefaultMinSyncRate is the background rate while users do I/O: enough to rebuild a 4 TB member in
// about 2 days under constant load, little enough to leave the members to the users.
const DefaultMinSyncRate = 20 << 20 // bytes/s

const (
	// foregroundQuiet is how long after the last user I/O the array counts as idle.
	foregroundQuiet = 200 * time.Millisecond
	// checkpointEvery is how often a rebuild records its progress in the member's superblock, so a
	// restart resumes close to where it stopped; it also does so after each sixteenth of the member,
	// as md does.
	checkpointEvery = 5 * time.Second
)

// Actions of the sync worker and scrubs, as md's sync_action.
const (
	ActionIdle    = "idle"
	ActionResync  = "resync"
	ActionRecover = "recover"
	ActionCheck   = "check"
	ActionRepair  = "repair"
)

// progress is what the background work is doing, readable at any time.
type progress struct {
	mu     sync.Mutex
	action string
	total  int64        // units: stripes, or rows of a member when recovering
	done   atomic.Int64 // units done
}

func (p *progress) set(action string, done, total int64) {
	p.mu.Lock()
	p.action, p.total = action, total
	p.done.Store(done)
	p.mu.Unlock()
}

// workState lets WaitSync wait for the sync worker and others wake it.
type workState struct {
	mu     sync.Mutex
	cond   *sync.Cond
	busy   bool // working, or about to be
	kicked bool // something changed since the worker last looked
	exited bool
}

// kick wakes the sync worker: a member failed, a spare arrived.
func (a *Array) kick() {
	if a.work.cond == nil {
		return // not started yet
	}
	a.work.mu.Lock()
	a.work.kicked = true
	a.work.cond.Broadcast()
	a.work.mu.Unlock()
}

// stopping reports whether Close asked background work to stop.
func (a *Array) stopping() bool {
	select {
	case <-a.resyncStop:
		return true
	default:
		return false
	}
}

// stopWorker makes the sync worker return and waits for it.
func (a *Array) stopWorker() {
	close(a.resyncStop)
	a.kick()
	<-a.resyncDone
}

// WaitSync blocks until the background work (sync, rebuilds) is done, or stopped by Close.
func (a *Array) WaitSync() {
	a.work.mu.Lock()
	defer a.work.mu.Unlock()
	for (a.work.busy || a.work.kicked) && !a.work.exited {
		a.work.cond.Wait()
	}
}

func (a *Array) syncWorker() {
	defer func() {
		a.work.mu.Lock()
		a.work.exited, a.work.busy = true, false
		a.work.cond.Broadcast()
		a.work.mu.Unlock()
		close(a.resyncDone)
	}()
	for {
		if !a.InSync() && !a.resync() {
			if a.stopping() {
				return
			}
		}
		a.activateSpares()
		for i := range a.slots {
			if m := a.slot(i); m != nil && !m.faulty.Load() && m.recovered.Load() != inSyncRows {
				a.rebuild(m)
			}
			if a.stopping() {
				return
			}
		}
		a.work.mu.Lock()
		if !a.work.kicked {
			a.work.busy = false
			a.work.cond.Broadcast()
			for !a.work.kicked {
				a.work.cond.Wait()
			}
		}
		a.work.kicked, a.work.busy = false, true
		a.work.mu.Unlock()
		if a.stopping() {
			return
		}
	}
}

// pacer keeps background I/O within the SyncRate.
type pacer struct {
	a       *Array
	start   time.Time // of the current window
	bytes   int64     // done in the window
	busy    bool      // the window is under foreground load
	lastFG  int64
	lastMov time.Time // when foreground I/O was last seen
}

// newPacer starts out as if foreground I/O had just been seen: background work begins at the low rate
// and speeds up once the users are quiet for foregroundQuiet.
func (a *Array) newPacer() *pacer {
	now := time.Now()
	return &pacer{a: a, start: now, busy: true, lastMov: now, lastFG: a.foreground.Load()}
}

// pace accounts n bytes of background I/O and sleeps as long as the rate asks.
func (p *pacer) pace(n int64) {
	now := time.Now()
	if fg := p.a.foreground.Load(); fg != p.lastFG {
		p.lastFG, p.lastMov = fg, now
	}
	busy := now.Sub(p.lastMov) < foregroundQuiet
	if busy != p.busy {
		p.start, p.bytes, p.busy = now, 0, busy
	}
	p.bytes += n
	r := p.a.SyncRate()
	rate := r.Max
	if busy {
		rate = r.Min
		if rate == 0 {
			rate = DefaultMinSyncRate
		}
	}
	if rate <= 0 {
		return
	}
	due := p.start.Add(time.Duration(float64(p.bytes) / float64(rate) * float64(time.Second)))
	if wait := due.Sub(now); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-p.a.resyncStop:
		}
	}
}

// SetSyncRate changes the background rate limits of the running array.
func (a *Array) SetSyncRate(r SyncRate) {
	a.rateMin.Store(r.Min)
	a.rateMax.Store(r.Max)
}

// SyncRate returns the background rate limits.
func (a *Array) SyncRate() SyncRate { return SyncRate{Min: a.rateMin.Load(), Max: a.rateMax.Load()} }

// AddSpare makes dev a hot spare of the array: it gets a superblock (role spare) and, when a slot has no
// working member, the array rebuilds onto it in the background at once. dev must be as large as the
// other members' data area and use a logical block no larger than the array's.
func (a *Array) AddSpare(dev block.Device) error {
	if a.level == md.LevelRAID0 {
		return fmt.Errorf("array: raid0 has no redundancy to rebuild onto a spare")
	}
	if dev.Size() < a.dataOffset+a.memberSize {
		return fmt.Errorf("array: spare of %d bytes: want at least %d (data offset %d + %d bytes of data)",
			dev.Size(), a.dataOffset+a.memberSize, a.dataOffset, a.memberSize)
	}
	if dev.LogicalBlockSize() > a.bs {
		return fmt.Errorf("array: spare with %d-byte sectors in an array of %d-byte sectors", dev.LogicalBlockSize(), a.bs)
	}
	var uuid [16]byte
	if _, err := io.ReadFull(rand.Reader, uuid[:]); err != nil {
		return fmt.Errorf("array: uuid: %w", err)
	}
	a.meta.Lock()
	defer a.meta.Unlock()
	if a.closed.Load() {
		return block.ErrClosed
	}
	if a.down.Load() {
		return ErrFailed
	}
	used := map[uint32]bool{}
	for i := range a.slots {
		if m := a.slot(i); m != nil {
			if m.dev == dev {
				return fmt.Errorf("array: device is already member %d", m.devNumber)
			}
			used[m.devNumber] = true
		}
	}
	for _, m := range a.spares {
		if m.dev == dev {
			return fmt.Errorf("array: device is already spare %d", m.devNumber)
		}
		used[m.devNumber] = true
	}
	// md takes the lowest dev_number no current member has.
	dn := uint32(0)
	for used[dn] {
		dn++
	}
	if int(dn) >= len(a.sb.DevRoles) {
		return fmt.Errorf("array: no free dev_number below max_dev %d", len(a.sb.DevRoles))
	}
	m := newMember(dev, dn, uuid, -1)
	a.spares = append(a.spares, m)
	a.sb.DevRoles[dn] = md.RoleSpare
	a.sb.Events++
	a.events.Store(a.sb.Events)
	if err := a.writeSuperblocksLocked(); err != nil {
		return err
	}
	if m.faulty.Load() {
		return errors.New("array: writing the spare's superblock failed")
	}
	a.kick()
	return nil
}

// dropFaultySpares forgets spares whose superblock writes failed. meta is held.
func (a *Array) dropFaultySpares() {
	kept := a.spares[:0]
	for _, m := range a.spares {
		if !m.faulty.Load() {
			kept = append(kept, m)
		}
	}
	a.spares = kept
}

// activateSpares puts spares into the slots without a working member; they start empty (recovery
// offset 0) and the worker rebuilds them.
func (a *Array) activateSpares() {
	a.meta.Lock()
	defer a.meta.Unlock()
	if a.down.Load() || a.closed.Load() {
		return
	}
	changed := false
	for i := range a.slots {
		if len(a.spares) == 0 {
			break
		}
		if m := a.slot(i); m != nil && !m.faulty.Load() {
			continue
		}
		s := a.spares[0]
		a.spares = a.spares[1:]
		s.role, s.checkpoint = i, 0
		s.recovered.Store(0)
		a.sb.DevRoles[s.devNumber] = uint16(i)
		a.slots[i].Store(s)
		changed = true
	}
	if changed {
		a.sb.Events++
		a.events.Store(a.sb.Events)
		a.writeSuperblocksLocked() // a failure is recorded on the member; the loop sees it
	}
}

// rebuild fills member m, in slot m.role, row by row from its recovery point, with the data the other
// members hold. Each row is rebuilt under its stripe lock, so writes to the row either precede the
// rebuild of it (and are recomputed) or follow it (and go to m too). The progress is checkpointed in m's
// superblock; at the end m is in sync and every superblock says so.
func (a *Array) rebuild(m *member) {
	total := a.rows()
	pace := a.newPacer()
	a.progress.set(ActionRecover, m.recovered.Load(), total)
	defer a.progress.set(ActionIdle, 0, 0)
	last, lastRow := time.Now(), m.recovered.Load()
	for r := m.recovered.Load(); r < total; r++ {
		if m.faulty.Load() || a.down.Load() {
			return
		}
		if a.stopping() {
			a.checkpoint(m, r)
			return
		}
		if err := a.rebuildRow(m, r); err != nil {
			return // recorded by fail: m (or the array) is out
		}
		a.progress.done.Store(r + 1)
		if time.Since(last) >= checkpointEvery || (r+1-lastRow)*16 >= total {
			a.checkpoint(m, r+1)
			last, lastRow = time.Now(), r+1
		}
		pace.pace(a.chunk * int64(a.n))
	}
	a.checkpoint(m, inSyncRows)
}

// checkpoint makes rows [0, r) of m durable and records r as m's recovery offset; r inSyncRows ends the
// rebuild: m is in sync, and every superblock says so.
func (a *Array) checkpoint(m *member, r int64) {
	if err := m.dev.Flush(); err != nil {
		a.fail(m, err)
		return
	}
	a.meta.Lock()
	defer a.meta.Unlock()
	if m.faulty.Load() || a.down.Load() {
		return
	}
	m.checkpoint = r
	if r == inSyncRows {
		m.recovered.Store(inSyncRows)
		a.sb.Events++
		a.events.Store(a.sb.Events)
		a.writeSuperblocksLocked() // a failure is recorded on the member
		return
	}
	if err := a.writeMemberSuper(m); err != nil {
		m.faulty.Store(true)
		a.failedLocked([]error{err})
	}
}

// rebuildRow writes row r of m from the other members.
func (a *Array) rebuildRow(m *member, r int64) error {
	off := a.dataOffset + r*a.chunk
	switch a.level {
	case md.LevelRAID5, md.LevelRAID6:
		mu := &a.locks[r%stripeLocks]
		mu.Lock()
		defer mu.Unlock()
		var owned buffers
		defer func() { a.putBufs(owned) }()
		shards, err := a.readStripe(r, 0, a.chunk, nil, nil, &owned) // m is not working at r: rebuilt
		if err != nil {
			return err
		}
		for i, role := range a.shardRoles(r) {
			if role == m.role {
				if _, err := m.dev.WriteAt(shards[i], off); err != nil {
					return a.failRebuild(m, err)
				}
			}
		}
		m.recovered.Store(r + 1)
		return nil
	case md.LevelRAID1, md.LevelRAID10:
		c := r // RAID1: the 64 KiB block r of every member
		if a.level == md.LevelRAID10 {
			// Near-2: position p = r*n + slot of the row-major sequence holds copy p%2 of chunk p/2.
			c = (r*int64(a.n) + int64(m.role)) / 2
			if c >= a.size/a.chunk {
				m.recovered.Store(r + 1) // the unused tail of the last row
				return nil
			}
		}
		mu := &a.locks[c%stripeLocks]
		mu.Lock()
		defer mu.Unlock()
		buf := make([]byte, a.chunk)
		if _, err := a.readCopy(c, buf, m.role); err != nil {
			return a.failRebuild(m, fmt.Errorf("chunk %d: %w", c, err))
		}
		if _, err := m.dev.WriteAt(buf, off); err != nil {
			return a.failRebuild(m, err)
		}
		m.recovered.Store(r + 1)
		return nil
	}
	return fmt.Errorf("array: raid%d cannot rebuild", a.level)
}

// failRebuild records the failure of the member being rebuilt and returns an error that stops the
// rebuild.
func (a *Array) failRebuild(m *member, err error) error {
	if ferr := a.fail(m, err); ferr != nil {
		return ferr
	}
	return err
}

// MemberStatus describes one member.
type MemberStatus struct {
	Slot      int    // -1 for a spare
	DevNumber uint32 // index into the superblock's dev_roles
	State     string // "in_sync", "rebuilding", "faulty", "spare", "missing"
	// Recovered is the bytes of the member's data area rebuilt so far, while State is "rebuilding".
	Recovered int64
}

// Status is a snapshot of the array's state and background work.
type Status struct {
	Name       string
	UUID       [16]byte
	Level      int
	Disks      int    // raid_disks
	Size       int64  // bytes
	Chunk      int64  // bytes
	State      string // "clean" (in sync), "degraded", "failed"
	Degraded   int    // slots without a working, fully rebuilt member
	Members    []MemberStatus
	Action     string // ActionIdle, ActionResync, ActionRecover, ActionCheck, ActionRepair
	Done       int64  // member bytes of the action done, per member
	Total      int64  // member bytes the action covers, per member
	Mismatches int64  // found by the last check or repair
	Events     uint64
}

// Status returns the array's state.
func (a *Array) Status() Status {
	a.meta.Lock()
	st := Status{Name: a.sb.SetName, UUID: a.sb.SetUUID, Level: a.level, Disks: a.n, Size: a.size, Chunk: a.chunk,
		Degraded: a.Degraded(), Mismatches: a.mismatches.Load(), Events: a.sb.Events}
	for i := range a.slots {
		ms := MemberStatus{Slot: i, State: "missing"}
		if m := a.slot(i); m != nil {
			ms.DevNumber = m.devNumber
			switch r := m.recovered.Load(); {
			case m.faulty.Load():
				ms.State = "faulty"
			case r != inSyncRows:
				ms.State, ms.Recovered = "rebuilding", r*a.chunk
			default:
				ms.State = "in_sync"
			}
		}
		st.Members = append(st.Members, ms)
	}
	for _, m := range a.spares {
		st.Members = append(st.Members, MemberStatus{Slot: -1, DevNumber: m.devNumber, State: "spare"})
	}
	a.meta.Unlock()
	switch {
	case a.down.Load():
		st.State = "failed"
	case st.Degraded > 0:
		st.State = "degraded"
	default:
		st.State = "clean"
	}
	a.progress.mu.Lock()
	st.Action = a.progress.action
	if st.Action == "" {
		st.Action = ActionIdle
	}
	unit := a.chunk
	if a.progress.total > 0 && st.Action != ActionRecover && a.level == md.LevelRAID10 {
		unit = a.chunk * 2 / int64(a.n) // RAID10 resync/check units are array chunks
	}
	st.Done, st.Total = a.progress.done.Load()*unit, a.progress.total*unit
	a.progress.mu.Unlock()
	return st
}
