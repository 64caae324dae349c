package array

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// Sequential writes smaller than a stripe (1 MiB writes on a RAID5 of 5 with 512 KiB chunks fill half a
// stripe each) would each read the rest of the stripe to compute parity, although the next write of the
// stream brings exactly that rest a moment later. Like md's stripe cache, the engine holds such a write
// briefly: a write of whole chunks from a stream (within streamSpan of one of the last recentWrites large
// writes: with several writes in flight they reach the engine a little out of order) that leaves part of
// its stripe unwritten waits up to gatherWait for the stream's writes to the rest of the stripe; together
// they make one write, a full-stripe one when they cover the stripe. Writes that join complete with it. A waiting write has not completed, so no flush or FUA promise is involved. A stream whose
// writes come one at a time (queue depth 1) never completes a stripe in time: after missMax waits in a
// row that nobody joined, streams stop waiting for the next skipMisses partial-stripe writes, then try
// again.

const (
	// gatherWait bounds the wait: about the time 1 MiB takes to arrive over 10 Gb/s Ethernet.
	gatherWait  = time.Millisecond
	missMax     = 4
	skipMisses  = 64
	recentCount = 16       // large writes remembered to recognise streams
	streamSpan  = 16 << 20 // bytes: how far from a recent write a stream's next writes land
)

// gathering is the partial-stripe writes waiting, by stripe.
type gathering struct {
	mu      sync.Mutex
	pending map[int64]*stripeGather
	merged  int64         // writes that joined another's, for tests
	wait    time.Duration // gatherWait; tests lengthen it
	misses  int           // waits in a row that nobody joined
	skip    int           // partial-stripe writes still to let through without waiting
	recent  [recentCount]int64
	next    int // slot of recent to overwrite
}

// near records a write of n bytes at off and reports whether a recent large write was within streamSpan.
func (g *gathering) near(off, n int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	found := false
	for _, r := range g.recent {
		if r != 0 && off+n > r-1-streamSpan && off < r-1+streamSpan {
			found = true
		}
	}
	g.recent[g.next] = off + 1 // +1: 0 marks an empty slot
	g.next = (g.next + 1) % recentCount
	return found
}

// stripeGather is one stripe's gathered write.
type stripeGather struct {
	pieces []piece       // whole chunks of distinct data indexes
	full   chan struct{} // closed when the pieces cover the stripe
	done   chan struct{} // closed once the write completed; err is its result
	err    error
}

// gather writes pieces of stripe s, joining or starting a gathered write when they are whole chunks.
func (a *Array) gather(s int64, pieces []piece) error {
	whole := len(pieces) < a.dataDisks
	for _, pc := range pieces {
		whole = whole && pc.lo == 0 && pc.hi == a.chunk
	}
	if !whole {
		return a.stripeWrite(s, pieces, false)
	}
	g := &a.gathering
	g.mu.Lock()
	p := g.pending[s]
	if p == nil && g.skip > 0 {
		g.skip--
		g.mu.Unlock()
		return a.stripeWrite(s, pieces, false)
	}
	if p != nil {
		for _, pc := range pieces {
			if slices.ContainsFunc(p.pieces, func(q piece) bool { return q.k == pc.k }) {
				// The same chunk twice: the writes overlap and may land in either order, as concurrent
				// writes may; this one goes on its own.
				g.mu.Unlock()
				return a.stripeWrite(s, pieces, false)
			}
		}
		p.pieces = append(p.pieces, pieces...)
		g.merged++
		if len(p.pieces) == a.dataDisks {
			close(p.full)
			delete(g.pending, s) // complete: nobody else may join
		}
		g.mu.Unlock()
		<-p.done
		return p.err
	}
	if g.pending == nil {
		g.pending = map[int64]*stripeGather{}
	}
	p = &stripeGather{pieces: slices.Clone(pieces), full: make(chan struct{}), done: make(chan struct{})}
	g.pending[s] = p
	g.mu.Unlock()
	t := time.NewTimer(cmp.Or(g.wait, gatherWait))
	select {
	case <-p.full:
	case <-t.C:
	}
	t.Stop()
	g.mu.Lock()
	if g.pending[s] == p {
		delete(g.pending, s)
	}
	ps := p.pieces
	if len(ps) > len(pieces) {
		g.misses = 0
	} else if g.misses++; g.misses >= missMax {
		g.misses, g.skip = 0, skipMisses
	}
	g.mu.Unlock()
	p.err = a.stripeWrite(s, ps, false)
	close(p.done)
	return p.err
}

// Gathered is how many writes were merged into another write of their stripe.
func (a *Array) Gathered() int64 {
	a.gathering.mu.Lock()
	defer a.gathering.mu.Unlock()
	return a.gathering.merged
}
