package array

import (
	"errors"
	"math/bits"
	"slices"
	"sync"
	"time"

	"opensan/gateway/block"
	"opensan/raid/layout"
	"opensan/raid/md"
)

// memOp is one member I/O of a stripe operation.
type memOp struct {
	m     *member
	buf   []byte
	off   int64 // bytes on the member
	write bool
	fua   bool
	err   error
}

// serialBelow is the average member operation time under which run does a stripe's member operations one
// after the other: starting and waiting for a goroutine costs about a microsecond or two, more than a 4 KiB
// copy to a RAM disk or page cache, while disks take tens of microseconds and up, and want them in parallel.
const serialBelow = 10 * time.Microsecond

// run performs ops: in parallel (all but the first on goroutines of their own, the first in place) on
// members that take their time, one after the other on fast ones. It keeps the average time per
// operation (a moving average over about 16 calls) to choose.
func (a *Array) run(ops []memOp) {
	if len(ops) == 0 {
		return
	}
	start := time.Now()
	if len(ops) == 1 || time.Duration(a.opNanos.Load()) < serialBelow {
		for i := range ops {
			doOp(&ops[i])
		}
		a.noteOpTime(time.Since(start) / time.Duration(len(ops)))
		return
	}
	var wg sync.WaitGroup
	for i := 1; i < len(ops); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			doOp(&ops[i])
		}()
	}
	doOp(&ops[0])
	a.noteOpTime(time.Since(start))
	wg.Wait()
}

// noteOpTime folds one member operation's duration into the moving average.
func (a *Array) noteOpTime(d time.Duration) {
	old := a.opNanos.Load()
	a.opNanos.Store(old + (int64(d)-old)/16) // racy by design: a lost update only slows the average
}

// doOp performs one member operation.
func doOp(o *memOp) {
	switch {
	case !o.write:
		_, o.err = o.m.dev.ReadAt(o.buf, o.off)
	case o.fua:
		_, o.err = block.WriteFUA(o.m.dev, o.buf, o.off)
	default:
		_, o.err = o.m.dev.WriteAt(o.buf, o.off)
	}
}

// failOps marks the members of failed ops faulty. It returns whether any failed and, if the array went
// down, ErrFailed.
func (a *Array) failOps(ops []memOp) (bool, error) {
	failed := false
	for i := range ops {
		if ops[i].err != nil {
			failed = true
			if err := a.fail(ops[i].m, ops[i].err); err != nil {
				return true, err
			}
		}
	}
	return failed, nil
}

// working returns the member of slot role if it is working and holds valid data at row (a stripe for
// RAID5/6, a member chunk for RAID10, a 64 KiB block for RAID1): nil for a missing or failed member, and
// for a member being rebuilt that has not reached row yet.
func (a *Array) working(role int, row int64) *member {
	m := a.slot(role)
	if m == nil || m.faulty.Load() || m.recovered.Load() <= row {
		return nil
	}
	return m
}

// rowOf is the row of a member byte offset.
func (a *Array) rowOf(off int64) int64 { return (off - a.dataOffset) / a.chunk }

// degradedAt is the number of slots without valid data at row.
func (a *Array) degradedAt(row int64) int {
	d := 0
	for i := range a.slots {
		if a.working(i, row) == nil {
			d++
		}
	}
	return d
}

func (a *Array) check(op string, n int, off int64) error {
	if a.closed.Load() {
		return &block.OpError{Op: op, Device: a.name(), Offset: off, Length: int64(n), Err: block.ErrClosed}
	}
	if a.down.Load() {
		return &block.OpError{Op: op, Device: a.name(), Offset: off, Length: int64(n), Err: ErrFailed}
	}
	if err := block.CheckRange(off, int64(n), a.size, a.bs); err != nil {
		return &block.OpError{Op: op, Device: a.name(), Offset: off, Length: int64(n), Err: err}
	}
	return nil
}

func (a *Array) name() string { return "md:" + a.sb.SetName }

func (a *Array) wrap(op string, n int, off int64, err error) error {
	if err == nil {
		return nil
	}
	return &block.OpError{Op: op, Device: a.name(), Offset: off, Length: int64(n), Err: err}
}

// ReadAt reads len(p) bytes at byte offset off of the array, reconstructing from redundancy around failed
// members.
func (a *Array) ReadAt(p []byte, off int64) (int, error) {
	if err := a.check("read", len(p), off); err != nil {
		return 0, err
	}
	a.foreground.Add(1)
	if err := a.rw(p, off, false, false, false); err != nil {
		return 0, a.wrap("read", len(p), off, err)
	}
	return len(p), nil
}

// WriteAt writes p at byte offset off; it completes while redundancy remains, marking failed members.
func (a *Array) WriteAt(p []byte, off int64) (int, error) { return a.write(p, off, false) }

// WriteAtFUA writes p and returns once it is durable on every member the write touched (data and parity).
func (a *Array) WriteAtFUA(p []byte, off int64) (int, error) { return a.write(p, off, true) }

func (a *Array) write(p []byte, off int64, fua bool) (int, error) {
	if err := a.check("write", len(p), off); err != nil {
		return 0, err
	}
	a.foreground.Add(1)
	if err := a.markDirty(); err != nil {
		return 0, a.wrap("write", len(p), off, err)
	}
	// A write of whole chunks near other recent ones belongs to a stream whose next writes may complete
	// its stripes: see gather.
	stream := int64(len(p)) >= a.chunk && a.gathering.near(off, int64(len(p)))
	if err := a.rw(p, off, true, fua, stream); err != nil {
		return 0, a.wrap("write", len(p), off, err)
	}
	return len(p), nil
}

// Discard zeroes the range (members are written with zeros so parity and mirrors stay consistent).
func (a *Array) Discard(off, length int64) error {
	if err := a.check("discard", 0, off); err != nil {
		return err
	}
	if err := block.CheckRange(off, length, a.size, a.bs); err != nil {
		return a.wrap("discard", int(length), off, err)
	}
	zero := make([]byte, min(length, 1<<20))
	for done := int64(0); done < length; {
		n := min(int64(len(zero)), length-done)
		if _, err := a.write(zero[:n], off+done, false); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// buffers are the pooled buffers one stripe operation took, to give back when it is done.
type buffers []*[]byte

// bufClass is the pool of buffers of 4 KiB << class bytes that holds n bytes.
func bufClass(n int64) int { return max(0, bits.Len64(uint64(n-1))-12) }

// getBuf returns an n-byte buffer (n <= chunk) from the array's pools and records it in owned. Buffers
// come in power-of-two sizes from 4 KiB, so a 4 KiB write does not drag chunk-sized buffers around.
func (a *Array) getBuf(n int64, owned *buffers) []byte {
	c := bufClass(n)
	p, _ := a.bufs[c].Get().(*[]byte)
	if p == nil {
		b := make([]byte, 4096<<c)
		p = &b
	}
	*owned = append(*owned, p)
	return (*p)[:n]
}

// putBufs returns buffers taken with getBuf.
func (a *Array) putBufs(owned buffers) {
	for _, p := range owned {
		a.bufs[bufClass(int64(cap(*p)))].Put(p)
	}
}

// piece is the part of an I/O that falls in one chunk: data index k of a stripe (or array chunk c),
// bytes [lo, hi) of the chunk, and the caller's buffer for them.
type piece struct {
	k      int
	lo, hi int64
	buf    []byte
}

// rw splits an I/O into chunks and runs it stripe by stripe (parity levels) or chunk by chunk.
func (a *Array) rw(p []byte, off int64, write, fua, stream bool) error {
	var pieces []piece
	stripe := int64(-1)
	flush := func() error {
		if len(pieces) == 0 {
			return nil
		}
		var err error
		switch {
		case write && stream && !fua:
			err = a.gather(stripe, pieces)
		case write:
			err = a.stripeWrite(stripe, pieces, fua)
		default:
			err = a.stripeRead(stripe, pieces)
		}
		pieces = pieces[:0]
		return err
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		c, in := pos/a.chunk, pos%a.chunk
		n := int(min(a.chunk-in, int64(len(p)-done)))
		buf := p[done : done+n]
		done += n
		switch a.level {
		case md.LevelRAID5, md.LevelRAID6:
			s, k := layout.Stripe(c, a.dataDisks)
			if s != stripe {
				if err := flush(); err != nil {
					return err
				}
				stripe = s
			}
			pieces = append(pieces, piece{k: k, lo: in, hi: in + int64(n), buf: buf})
		default:
			if err := a.mirrorIO(c, in, buf, write, fua); err != nil {
				return err
			}
		}
	}
	return flush()
}

// copies returns where array chunk c lives on RAID0/1/10: (role, member byte offset of the chunk) pairs.
func (a *Array) copies(c int64) [][2]int64 {
	switch a.level {
	case md.LevelRAID0:
		m, row := layout.RAID0(c, a.n)
		return [][2]int64{{int64(m), a.dataOffset + row*a.chunk}}
	case md.LevelRAID10:
		m0, r0 := layout.RAID10Near2(c, a.n, 0)
		m1, r1 := layout.RAID10Near2(c, a.n, 1)
		return [][2]int64{{int64(m0), a.dataOffset + r0*a.chunk}, {int64(m1), a.dataOffset + r1*a.chunk}}
	}
	out := make([][2]int64, a.n)
	for i := range out {
		out[i] = [2]int64{int64(i), a.dataOffset + c*a.chunk}
	}
	return out
}

// mirrorIO reads from one working copy (trying the next on error) or writes every working copy.
func (a *Array) mirrorIO(c, in int64, buf []byte, write, fua bool) error {
	locs := a.copies(c)
	if !write {
		start := int(c) % len(locs) // spread reads of a mirror over its copies
		if !a.unitInSync(c) {
			start = 0 // copies may differ until the resync: read the one it copies from, as md does
		}
		for i := range locs {
			l := locs[(start+i)%len(locs)]
			m := a.working(int(l[0]), a.rowOf(l[1]))
			if m == nil {
				continue
			}
			if _, err := m.dev.ReadAt(buf, l[1]+in); err != nil {
				if ferr := a.fail(m, err); ferr != nil {
					return ferr
				}
				continue
			}
			return nil
		}
		return ErrFailed
	}
	mu := &a.locks[c%stripeLocks]
	mu.Lock()
	defer mu.Unlock()
	if err := a.startWrite(c); err != nil {
		return err
	}
	defer a.endWrite(c)
	ops := make([]memOp, 0, len(locs))
	for _, l := range locs {
		if m := a.working(int(l[0]), a.rowOf(l[1])); m != nil {
			ops = append(ops, memOp{m: m, buf: buf, off: l[1] + in, write: true, fua: fua})
		}
	}
	if len(ops) == 0 {
		return ErrFailed
	}
	a.run(ops)
	if _, err := a.failOps(ops); err != nil {
		return err
	}
	for _, o := range ops {
		if o.err == nil {
			return nil
		}
	}
	return ErrFailed
}

// roles returns the member roles of stripe s: data index k's role in data[k], then P and Q (-1 if none).
func (a *Array) roles(s int64) (data []int, p, q int) {
	data = make([]int, a.dataDisks)
	q = -1
	for k := range data {
		if a.level == md.LevelRAID6 {
			p, q, data[k] = layout.RAID6(s, a.n, k)
		} else {
			p, data[k] = layout.RAID5(s, a.n, k)
		}
	}
	return data, p, q
}

// shardRoles lists the role of each coder shard: data 0..dataDisks-1, then P, then Q.
func (a *Array) shardRoles(s int64) []int {
	data, p, q := a.roles(s)
	out := append(data, p)
	if q >= 0 {
		out = append(out, q)
	}
	return out
}

// stripeRead reads pieces of stripe s; pieces on failed members are rebuilt from the rest of the stripe.
func (a *Array) stripeRead(s int64, pieces []piece) error {
	data, _, _ := a.roles(s)
	base := a.dataOffset + s*a.chunk
	lost := pieces // a piece on a missing member: rebuild them all from the stripe at once
	for _, pc := range pieces {
		if a.working(data[pc.k], s) == nil {
			goto degraded
		}
	}
	lost = nil
	{
		ops := make([]memOp, len(pieces))
		for i, pc := range pieces {
			ops[i] = memOp{m: a.slot(data[pc.k]), buf: pc.buf, off: base + pc.lo}
		}
		a.run(ops)
		for i := range ops {
			if ops[i].err != nil {
				if err := a.fail(ops[i].m, ops[i].err); err != nil {
					return err
				}
				lost = append(lost, pieces[i])
			}
		}
		if len(lost) == 0 {
			return nil
		}
	}
degraded:
	mu := &a.locks[s%stripeLocks]
	mu.Lock()
	defer mu.Unlock()
	lo, hi := span(lost)
	// Pieces covering the whole span are read (or rebuilt) straight into the caller's buffers.
	dst := make([][]byte, len(a.shardRoles(s)))
	for _, pc := range lost {
		if pc.lo == lo && pc.hi == hi {
			dst[pc.k] = pc.buf
		}
	}
	var owned buffers
	defer func() { a.putBufs(owned) }()
	shards, err := a.readStripe(s, lo, hi, nil, dst, &owned)
	if err != nil {
		return err
	}
	for _, pc := range lost {
		if sh := shards[pc.k]; &sh[0] != &pc.buf[0] { // not rebuilt in place
			copy(pc.buf, sh[pc.lo-lo:pc.hi-lo])
		}
	}
	return nil
}

func span(pieces []piece) (lo, hi int64) {
	lo, hi = pieces[0].lo, pieces[0].hi
	for _, pc := range pieces[1:] {
		lo, hi = min(lo, pc.lo), max(hi, pc.hi)
	}
	return lo, hi
}

// readStripe reads bytes [lo, hi) of every shard of stripe s whose need[i] is true (all when need is nil)
// from working members and rebuilds those on failed members, into dst[i] where dst (optional) has a
// buffer of hi-lo bytes, else into pooled buffers. The stripe lock must be held. Read errors mark
// members faulty and the read is retried.
func (a *Array) readStripe(s, lo, hi int64, need []bool, dst [][]byte, owned *buffers) ([][]byte, error) {
	roles := a.shardRoles(s)
	base := a.dataOffset + s*a.chunk
	buf := func(i int) []byte {
		if dst != nil && dst[i] != nil {
			return dst[i][:hi-lo]
		}
		return a.getBuf(hi-lo, owned)
	}
	for {
		shards := make([][]byte, len(roles))
		missing := false
		for _, r := range roles {
			if a.working(r, s) == nil {
				missing = true
			}
		}
		var ops []memOp
		for i, r := range roles {
			if need != nil && !need[i] && !missing {
				continue
			}
			if m := a.working(r, s); m != nil {
				shards[i] = buf(i)
				ops = append(ops, memOp{m: m, buf: shards[i], off: base + lo})
			}
		}
		a.run(ops)
		failed, err := a.failOps(ops)
		if err != nil {
			return nil, err
		}
		if failed {
			continue
		}
		if missing {
			for i := range shards {
				if shards[i] == nil {
					shards[i] = buf(i)[:0]
				}
			}
			if err := a.coder.Reconstruct(shards); err != nil {
				return nil, errors.Join(ErrFailed, err)
			}
		}
		return shards, nil
	}
}

// stripeWrite writes pieces of stripe s and its parity. It reads what it needs first (read-modify-write or
// reconstruct-write, whichever reads less; a full-stripe write reads nothing), then writes the final data
// and parity; a member failing during the writes is marked faulty and the rest carry on, since what is
// written is the stripe's final consistent content.
func (a *Array) stripeWrite(s int64, pieces []piece, fua bool) error {
	mu := &a.locks[s%stripeLocks]
	mu.Lock()
	defer mu.Unlock()
	if err := a.startWrite(s); err != nil {
		return err
	}
	defer a.endWrite(s)
	lo, hi := span(pieces)
	size := hi - lo
	nd := a.dataDisks
	np := a.coder.Parity()
	covered := make([]bool, nd) // data index k fully rewritten over [lo, hi)
	touched := make([]bool, nd)
	for _, pc := range pieces {
		touched[pc.k] = true
		covered[pc.k] = pc.lo == lo && pc.hi == hi
	}
	nCovered, nTouched := 0, 0
	for k := range nd {
		if covered[k] {
			nCovered++
		}
		if touched[k] {
			nTouched++
		}
	}
	rmwReads := nTouched + np
	rcwReads := nd - nCovered
	degraded := a.degradedAt(s) > 0
	synced := a.unitInSync(s)

	var shards [][]byte
	var err error
	var owned buffers
	defer func() { a.putBufs(owned) }()
	switch {
	case nCovered == nd:
		// Full stripe over [lo, hi): parity from the new data alone, the caller's buffers as data shards.
		shards = make([][]byte, nd+np)
		for _, pc := range pieces {
			shards[pc.k] = pc.buf
		}
		for i := nd; i < nd+np; i++ {
			shards[i] = a.getBuf(size, &owned)
		}
		err = a.coder.Encode(shards)
	case !degraded && synced && rmwReads <= rcwReads: // on a tie, RMW: updating parity costs less than encoding it
		need := make([]bool, nd+np)
		for k := range nd {
			need[k] = touched[k] // old data, to take its share out of the parity
		}
		for i := nd; i < nd+np; i++ {
			need[i] = true
		}
		shards, err = a.readStripe(s, lo, hi, need, nil, &owned)
		if err != nil {
			return err
		}
		if a.degradedAt(s) > 0 { // a member failed while reading: start again on the degraded path
			return a.stripeWriteLocked(s, pieces, fua, lo, hi)
		}
		// Update parity for each touched data shard: old -> new.
		for k := range nd {
			if !touched[k] {
				continue
			}
			var nw []byte
			if covered[k] {
				nw = pieces[slices.IndexFunc(pieces, func(pc piece) bool { return pc.k == k })].buf // the caller's
			} else {
				nw = a.getBuf(size, &owned)
				copy(nw, shards[k])
				for _, pc := range pieces {
					if pc.k == k {
						copy(nw[pc.lo-lo:], pc.buf)
					}
				}
			}
			if err = a.coder.Update(k, shards[k], nw, shards[nd:]); err != nil {
				return err
			}
			shards[k] = nw
		}
	default:
		return a.stripeWriteLocked(s, pieces, fua, lo, hi)
	}
	if err != nil {
		return err
	}
	return a.writeShards(s, shards, touched, lo, fua)
}

// stripeWriteLocked is reconstruct-write: read every data shard not fully rewritten (rebuilding failed
// members from parity), put the new data in, recompute parity, write.
func (a *Array) stripeWriteLocked(s int64, pieces []piece, fua bool, lo, hi int64) error {
	nd := a.dataDisks
	touched := make([]bool, nd)
	need := make([]bool, nd+a.coder.Parity())
	for k := range nd {
		need[k] = true
	}
	for _, pc := range pieces {
		touched[pc.k] = true
	}
	var owned buffers
	defer func() { a.putBufs(owned) }()
	shards, err := a.readStripe(s, lo, hi, need, nil, &owned)
	if err != nil {
		return err
	}
	for i := nd; i < len(shards); i++ {
		shards[i] = a.getBuf(hi-lo, &owned)
	}
	if err := a.coder.Encode(overlay(shards, pieces, lo)); err != nil {
		return err
	}
	return a.writeShards(s, shards, touched, lo, fua)
}

// overlay copies the pieces' new data into the data shards (which cover [lo, ...)).
func overlay(shards [][]byte, pieces []piece, lo int64) [][]byte {
	for _, pc := range pieces {
		copy(shards[pc.k][pc.lo-lo:], pc.buf)
	}
	return shards
}

// writeShards writes the touched data shards and every parity shard of stripe s, at [lo, ...), to the
// working members.
func (a *Array) writeShards(s int64, shards [][]byte, touched []bool, lo int64, fua bool) error {
	roles := a.shardRoles(s)
	base := a.dataOffset + s*a.chunk
	ops := make([]memOp, 0, len(shards))
	for i, r := range roles {
		if i < a.dataDisks && !touched[i] {
			continue
		}
		if m := a.working(r, s); m != nil {
			ops = append(ops, memOp{m: m, buf: shards[i], off: base + lo, write: true, fua: fua})
		}
	}
	a.run(ops)
	_, err := a.failOps(ops)
	return err
}
