package array

import (
	"bytes"

	"opensan/raid/md"
)

// Check reads the whole array and counts the units whose redundancy disagrees with the data: stripes
// whose parity does not verify (RAID5/6), chunks whose copies differ (RAID1/10). Like md's "check", it
// repairs nothing and skips units it cannot verify on a degraded array. Mismatches count units, not
// sectors.
func (a *Array) Check() (mismatches int64, err error) {
	if a.level == md.LevelRAID0 {
		return 0, nil
	}
	for u := range a.stripes() {
		bad, err := a.checkUnit(u)
		if err != nil {
			return mismatches, err
		}
		if bad {
			mismatches++
		}
	}
	return mismatches, nil
}

func (a *Array) checkUnit(u int64) (bool, error) {
	mu := &a.locks[u%stripeLocks]
	mu.Lock()
	defer mu.Unlock()
	switch a.level {
	case md.LevelRAID5, md.LevelRAID6:
		if a.Degraded() > 0 {
			return false, nil
		}
		var owned [][]byte
		defer func() { a.putBufs(owned) }()
		shards, err := a.readStripe(u, 0, a.chunk, nil, &owned)
		if err != nil {
			return false, err
		}
		ok, err := a.coder.Verify(shards)
		return !ok, err
	default:
		var first []byte
		for _, l := range a.copies(u) {
			m := a.working(int(l[0]))
			if m == nil {
				continue
			}
			buf := make([]byte, a.chunk)
			if _, err := m.dev.ReadAt(buf, l[1]); err != nil {
				return false, err
			}
			if first == nil {
				first = buf
			} else if !bytes.Equal(first, buf) {
				return true, nil
			}
		}
	}
	return false, nil
}
