package array

import (
	"bytes"

	"opensan/raid/md"
)

// Check reads the whole array and counts the units whose redundancy disagrees with the data: stripes
// whose parity does not verify (RAID5/6), chunks whose copies differ (RAID1/10). Like md's "check", it
// repairs nothing and skips units it cannot verify (a degraded stripe, a mirror chunk with one copy).
// Mismatches count units (stripes of Chunk bytes per member, or chunks), not sectors.
func (a *Array) Check() (mismatches int64, err error) { return a.scrub(false) }

// Repair is Check that also rewrites the redundancy of each mismatched unit from its data, as md's
// "repair": parity recomputed from the data members (RAID5/6), the first working copy copied over the
// others (RAID1/10). It returns the number of units it found mismatched (and repaired).
func (a *Array) Repair() (mismatches int64, err error) { return a.scrub(true) }

func (a *Array) scrub(repair bool) (mismatches int64, err error) {
	if a.level == md.LevelRAID0 {
		return 0, nil
	}
	if err := a.check("scrub", 0, 0); err != nil {
		return 0, err
	}
	action := ActionCheck
	if repair {
		action = ActionRepair
	}
	a.progress.set(action, 0, a.stripes())
	defer a.progress.set(ActionIdle, 0, 0)
	for u := range a.stripes() {
		bad, err := a.scrubUnit(u, repair)
		if err != nil {
			return mismatches, err
		}
		if bad {
			mismatches++
		}
		a.progress.done.Store(u + 1)
	}
	a.mismatches.Store(mismatches)
	return mismatches, nil
}

func (a *Array) scrubUnit(u int64, repair bool) (bool, error) {
	mu := &a.locks[u%stripeLocks]
	mu.Lock()
	defer mu.Unlock()
	switch a.level {
	case md.LevelRAID5, md.LevelRAID6:
		if a.degradedAt(u) > 0 {
			return false, nil
		}
		var owned buffers
		defer func() { a.putBufs(owned) }()
		shards, err := a.readStripe(u, 0, a.chunk, nil, nil, &owned)
		if err != nil {
			return false, err
		}
		ok, err := a.coder.Verify(shards)
		if err != nil || ok || !repair {
			return !ok, err
		}
		if err := a.startWrite(u); err != nil {
			return true, err
		}
		defer a.endWrite(u)
		return true, a.rewriteParity(u, shards, &owned)
	default:
		var first []byte
		var differ []memOp
		for _, l := range a.copies(u) {
			m := a.working(int(l[0]), a.rowOf(l[1]))
			if m == nil {
				continue
			}
			buf := make([]byte, a.chunk)
			if _, err := m.dev.ReadAt(buf, l[1]); err != nil {
				if ferr := a.fail(m, err); ferr != nil {
					return false, ferr
				}
				continue
			}
			if first == nil {
				first = buf
			} else if !bytes.Equal(first, buf) {
				differ = append(differ, memOp{m: m, buf: first, off: l[1], write: true})
			}
		}
		if len(differ) == 0 || !repair {
			return len(differ) > 0, nil
		}
		if err := a.startWrite(u); err != nil {
			return true, err
		}
		defer a.endWrite(u)
		a.run(differ)
		_, err := a.failOps(differ)
		return true, err
	}
}
