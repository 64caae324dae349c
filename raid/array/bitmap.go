package array

import (
	"sync"
	"sync/atomic"
	"time"

	"opensan/raid/md"
)

// intent is the write-intent bitmap at run time (md-bitmap.c's protocol): before data or parity is
// written in a region, the region's bit is set and made durable on every member; bits of regions without
// writes in flight are cleared lazily, after the members were flushed. After an unclean stop only the
// regions whose bits are set need a resync.
//
// Each bit covers ChunkSize bytes of the "sync space": member data bytes for RAID1/5/6, array bytes for
// RAID10 (md's sync_size). The data path touches only atomics; mu serialises bitmap writes.
type intent struct {
	super   md.BitmapSuper
	chunk   int64 // bytes per bit
	nbits   int64
	pending []atomic.Int32 // writes in flight per bit
	onDisk  []atomic.Bool  // the bit is set on the members
	used    []atomic.Bool  // written since the last daemon pass
	mu      sync.Mutex     // held while writing the bitmap; guards bits
	bits    []byte         // the bits as last written (or about to be)
	delay   time.Duration  // daemon period
	stop    chan struct{}
	done    chan struct{}
}

func newIntent(bm md.BitmapSuper, delay time.Duration) *intent {
	n := int64(bm.Bits())
	in := &intent{super: bm, chunk: int64(bm.ChunkSize), nbits: n, pending: make([]atomic.Int32, n),
		onDisk: make([]atomic.Bool, n), used: make([]atomic.Bool, n), bits: make([]byte, (n+7)/8), delay: delay}
	if in.delay == 0 {
		in.delay = time.Duration(max(bm.DaemonSleep, 1)) * time.Second
	}
	return in
}

// unitBits returns the bits covering resync/lock unit u of the array.
func (a *Array) unitBits(u int64) (lo, hi int64) {
	lo = u * a.chunk / a.intent.chunk
	hi = ((u+1)*a.chunk - 1) / a.intent.chunk
	return lo, min(hi, a.intent.nbits-1)
}

// startWrite makes sure the bits of unit u are durable before the caller writes data or parity there.
func (a *Array) startWrite(u int64) error {
	in := a.intent
	if in == nil {
		return nil
	}
	lo, hi := a.unitBits(u)
	missing := false
	for b := lo; b <= hi; b++ {
		in.pending[b].Add(1) // before reading onDisk: the daemon checks pending after clearing onDisk
		in.used[b].Store(true)
		if !in.onDisk[b].Load() {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	in.mu.Lock()
	var set []int64
	for b := lo; b <= hi; b++ {
		if !in.onDisk[b].Load() {
			md.SetBit(in.bits, uint64(b), true)
			set = append(set, b)
		}
	}
	var failed []error
	var who []*member
	if len(set) > 0 {
		who, failed = a.writeBitmapLocked()
		for _, b := range set {
			in.onDisk[b].Store(true)
		}
	}
	in.mu.Unlock()
	for i, m := range who {
		if err := a.fail(m, failed[i]); err != nil {
			a.endWrite(u)
			return err
		}
	}
	return nil
}

// endWrite drops unit u's writes-in-flight count.
func (a *Array) endWrite(u int64) {
	if a.intent == nil {
		return
	}
	lo, hi := a.unitBits(u)
	for b := lo; b <= hi; b++ {
		a.intent.pending[b].Add(-1)
	}
}

// writeBitmapLocked writes the bitmap (header and bits) to every working member and flushes them. It
// returns the members that failed, for the caller to fail once it released intent.mu.
func (a *Array) writeBitmapLocked() (who []*member, errs []error) {
	for _, m := range a.live() {
		err := a.writeMemberBitmap(m, a.eventsForBitmap())
		if err == nil {
			err = m.dev.Flush()
		}
		if err != nil {
			who, errs = append(who, m), append(errs, err)
		}
	}
	return who, errs
}

// eventsForBitmap is the superblock's event count, read without the metadata lock (it only grows).
func (a *Array) eventsForBitmap() uint64 { return a.events.Load() }

// writeMemberBitmap writes bitmap header and bits at superblock + bitmap_offset. intent.mu is held.
func (a *Array) writeMemberBitmap(m *member, events uint64) error {
	in := a.intent
	bm := in.super
	bm.Events = events
	hdr, err := md.EncodeBitmap(&bm)
	if err != nil {
		return err
	}
	mbs := m.dev.LogicalBlockSize()
	buf := make([]byte, bm.BitmapLen(mbs))
	copy(buf, hdr)
	copy(buf[md.BitmapSuperSize:], in.bits)
	_, err = m.dev.WriteAt(buf, superOffsetBytes+int64(a.sb.BitmapOffset)*md.SectorSize)
	return err
}

// bitmapDaemon clears, every period, the bits that saw no write during the last period and have none in
// flight, once the members were flushed so the data and parity they guarded are stable.
func (a *Array) bitmapDaemon() {
	in := a.intent
	defer close(in.done)
	t := time.NewTicker(in.delay)
	defer t.Stop()
	for {
		select {
		case <-in.stop:
			return
		case <-t.C:
		}
		a.clearIdleBits(false)
	}
}

// clearIdleBits clears idle bits (all bits with none in flight when all is true).
func (a *Array) clearIdleBits(all bool) {
	in := a.intent
	in.mu.Lock()
	var cleared []int64
	for b := range in.nbits {
		if !in.onDisk[b].Load() {
			continue
		}
		if in.used[b].Swap(false) && !all {
			continue // written during this period: keep it one more period
		}
		if !a.bitInSync(b) {
			continue
		}
		in.onDisk[b].Store(false)
		if in.pending[b].Load() != 0 { // a writer slipped in: it relies on the bit
			in.onDisk[b].Store(true)
			continue
		}
		cleared = append(cleared, b)
	}
	if len(cleared) == 0 {
		in.mu.Unlock()
		return
	}
	var who []*member
	var errs []error
	// Data and parity under these bits must be stable before the bits go.
	for _, m := range a.live() {
		if err := m.dev.Flush(); err != nil {
			who, errs = append(who, m), append(errs, err)
		}
	}
	for _, b := range cleared {
		md.SetBit(in.bits, uint64(b), false)
	}
	in.super.EventsCleared = a.eventsForBitmap()
	w2, e2 := a.writeBitmapLocked()
	in.mu.Unlock()
	who, errs = append(who, w2...), append(errs, e2...)
	for i, m := range who {
		a.fail(m, errs[i])
	}
}

// bitInSync reports whether every unit under bit b is in sync (so the bit may go).
func (a *Array) bitInSync(b int64) bool {
	lastUnit := min(((b+1)*a.intent.chunk-1)/a.chunk, a.stripes()-1) // the last bit may reach past the end
	return !a.needSync(b) || lastUnit < a.syncedStripes.Load()
}
