package array

import (
	"opensan/raid/md"
)

// resync brings redundancy in line with the data, unit by unit from syncedStripes on: parity recomputed
// from the data (RAID5/6), the first copy copied over the others (RAID1/10). It runs in the background
// after Create and after an unclean stop; writes meanwhile are safe (reconstruct-write above the
// position). Close stops it; the array then stays dirty and the next assembly starts over. It runs on
// the sync worker and returns false when it was stopped or the array went down.
func (a *Array) resync() bool {
	total := a.stripes()
	pace := a.newPacer()
	unitBytes := a.chunk * int64(a.n) // every member's share of a unit is read or written
	if a.level == md.LevelRAID10 {
		unitBytes = 2 * a.chunk
	}
	a.progress.set(ActionResync, a.syncedStripes.Load(), total)
	defer a.progress.set(ActionIdle, 0, 0)
	for u := a.syncedStripes.Load(); u < total; u++ {
		if a.stopping() || a.down.Load() {
			return false
		}
		if a.unitInSync(u) {
			a.syncedStripes.Store(u + 1)
			a.progress.done.Store(u + 1)
			continue // its bitmap bits are clear: nothing was in flight there
		}
		if err := a.resyncUnit(u); err != nil {
			return false // the array went down; I/O reports it
		}
		a.resynced.Add(1)
		a.syncedStripes.Store(u + 1)
		a.progress.done.Store(u + 1)
		pace.pace(unitBytes)
	}
	return true
}

// needSync reports whether the regions under bitmap bit b need the running resync.
func (a *Array) needSync(b int64) bool { return a.needBits == nil || a.needBits[b] }

// unitInSync reports whether unit u's redundancy is known to match its data.
func (a *Array) unitInSync(u int64) bool {
	if u < a.syncedStripes.Load() {
		return true
	}
	if a.intent == nil || a.needBits == nil {
		return false
	}
	lo, hi := a.unitBits(u)
	for b := lo; b <= hi; b++ {
		if a.needBits[b] {
			return false
		}
	}
	return true
}

// Resynced is how many units (stripes, or chunks for RAID1/10) the resyncs of this run rewrote.
func (a *Array) Resynced() int64 { return a.resynced.Load() }

func (a *Array) resyncUnit(u int64) error {
	mu := &a.locks[u%stripeLocks]
	mu.Lock()
	defer mu.Unlock()
	switch a.level {
	case md.LevelRAID5, md.LevelRAID6:
		nd := a.dataDisks
		need := make([]bool, nd+a.coder.Parity())
		for k := range nd {
			need[k] = true
		}
		var owned buffers
		defer func() { a.putBufs(owned) }()
		shards, err := a.readStripe(u, 0, a.chunk, need, nil, &owned)
		if err != nil {
			return err
		}
		return a.rewriteParity(u, shards, &owned)
	case md.LevelRAID1, md.LevelRAID10:
		buf := make([]byte, a.chunk)
		src, err := a.readCopy(u, buf, -1)
		if err != nil {
			return err
		}
		var ops []memOp
		for i, l := range a.copies(u) {
			if m := a.working(int(l[0]), a.rowOf(l[1])); m != nil && i != src {
				ops = append(ops, memOp{m: m, buf: buf, off: l[1], write: true})
			}
		}
		if len(ops) > 0 {
			a.run(ops)
			if _, err := a.failOps(ops); err != nil {
				return err
			}
		}
		return nil
	}
	return nil
}

// InSync reports whether the redundancy of the whole array matches its data.
func (a *Array) InSync() bool { return a.syncedStripes.Load() >= a.stripes() }

// readCopy reads chunk c of a RAID1/10 array into buf (a whole chunk) from the first working copy not on
// slot skip, failing members whose reads fail. It returns the index of the copy in copies(c).
func (a *Array) readCopy(c int64, buf []byte, skip int) (int, error) {
	for i, l := range a.copies(c) {
		m := a.working(int(l[0]), a.rowOf(l[1]))
		if m == nil || int(l[0]) == skip {
			continue
		}
		if _, err := m.dev.ReadAt(buf, l[1]); err != nil {
			if ferr := a.fail(m, err); ferr != nil {
				return -1, ferr
			}
			continue
		}
		return i, nil
	}
	return -1, ErrFailed
}

// rewriteParity computes stripe u's parity from the data shards (whole chunks) and writes it.
func (a *Array) rewriteParity(u int64, shards [][]byte, owned *buffers) error {
	nd := a.dataDisks
	for i := nd; i < len(shards); i++ {
		shards[i] = a.getBuf(a.chunk, owned)
	}
	if err := a.coder.Encode(shards); err != nil {
		return err
	}
	return a.writeShards(u, shards, make([]bool, nd), 0, false)
}
