package iscsi

import (
	"errors"
	"time"
)

// Inline execution.
//
// Handing a command to another goroutine and its response to a third costs two goroutine wake-ups, and
// on a machine with idle cores each wake-up is a futex call and a context switch: tens of microseconds
// in a VM, more than a 4 KiB read from the page cache takes. So the reader runs small READ and WRITE
// commands itself, between PDUs, when the logical unit has lately answered such commands quickly, and
// keeps their responses until it may have to wait for the socket: then it writes them, with anything
// else it produced (R2Ts), in one writev. At queue depth 1 a command then costs one goroutine, one read
// and one writev; at higher depths the commands that arrived together are answered together.
//
// A slow device (a disk, a file on a network filesystem) would hold the reader up, so the commands that
// may run inline are timed wherever they run (a moving average, execNs) and the reader hands them to
// command goroutines whenever the average exceeds inlineMaxNs: then slow commands overlap as before. A
// command that hangs while the reader runs it (a device that stops answering) would stop the reader
// from answering NOP-Outs and seeing task management requests; the pinger notices a reader stuck for
// inlineStall and starts a new reader goroutine (checkInline), and the stuck one, once its command returns,
// answers it like a command goroutine and ends.

const (
	// inlineMaxLen is the largest transfer (bytes) a command may run inline with: a 64 KiB copy costs a
	// few microseconds, larger transfers are worth overlapping.
	inlineMaxLen = 64 << 10
	// maxInlineBatch bounds the PDUs the reader holds back before it writes them anyway.
	maxInlineBatch = 64
)

// Variables rather than constants so that tests can force inline execution under the race detector
// (which makes every Execute slow) and see a stuck reader replaced quickly.
var (
	// inlineMaxNs is the average Execute time (ns) under which commands run inline: about what the two
	// goroutine hand-offs they save cost. A session starts at 4 times that, so it runs its first commands
	// on command goroutines and goes inline once the unit has shown itself fast (about a dozen commands).
	inlineMaxNs int64 = 40_000
	// inlineStall is how long the reader may be stuck in one command before the pinger replaces it.
	inlineStall = time.Second
)

// errReplaced ends a reader goroutine whose role another goroutine has taken over.
var errReplaced = errors.New("iscsi: reader role taken over")

// reader is the state of the reader role: the tasks it is to run itself and what it holds for its next
// write. Only the goroutine holding the role touches it; checkInline passes it on.
type reader struct {
	ready []*task   // data complete, to run inline in this order
	rq    []*txItem // responses and R2Ts produced inline, to write in one batch
	rqN   int       // PDUs in rq
	// doneN counts the inline tasks whose responses are in rq: their tasksWG slots are given back once
	// the responses are written, so that a Logout Response or teardown waiting for them comes after.
	doneN int
}

// monoEpoch anchors monoNow.
var monoEpoch = time.Now()

// monoNow is the monotonic clock in nanoseconds since monoEpoch, never 0.
func monoNow() int64 { return int64(time.Since(monoEpoch)) + 1 }

// inlineOK reports whether t may run on the reader now.
func (s *session) inlineOK(t *task) bool {
	return t.small && s.execNs.Load() < inlineMaxNs
}

// noteExec folds one Execute duration (ns) of an inline-capable command into the moving average
// (weight 1/8). Concurrent updates may lose a sample, which does not matter for an average.
func (s *session) noteExec(d int64) {
	old := s.execNs.Load()
	s.execNs.Store(old + (d-old)/8)
}

// queueInline adds it to what the reader writes at its next flush, and flushes when that is much.
func (s *session) queueInline(r *reader, it *txItem) {
	r.rq = append(r.rq, it)
	r.rqN += len(it.pdus)
	s.rqLen.Store(int32(len(r.rq)))
	if r.rqN >= maxInlineBatch {
		s.flushInline(r)
	}
}

// mayBlock reports whether the reader's next read may wait for the socket: the buffer does not hold a
// whole PDU. The reader then writes what it holds first.
func (s *session) mayBlock() bool {
	n := s.br.Buffered()
	if n < BHSLen {
		return true
	}
	b, _ := s.br.Peek(BHSLen)
	h := (*BHS)(b)
	need := BHSLen + h.TotalAHSLength() + h.DataSegmentLength() + pad4(h.DataSegmentLength())
	if s.digests.Header {
		need += 4
	}
	if s.digests.Data && h.DataSegmentLength() > 0 {
		need += 4
	}
	return n < need
}

// flushInline writes what the reader holds, in one writev, and gives the tasksWG slots of the inline
// tasks back.
func (s *session) flushInline(r *reader) {
	if len(r.rq) == 0 {
		return
	}
	if s.wmu.TryLock() {
		s.writeLocked(r.rq)
		s.wmu.Unlock()
		for _, it := range r.rq {
			it.finish()
		}
	} else {
		// Someone is writing, maybe a large Data-In into a full socket: rather than wait behind it (and
		// stop reading), queue the batch for the writer, which keeps the order.
		for _, it := range r.rq {
			s.send(it)
		}
	}
	clear(r.rq)
	r.rq, r.rqN = r.rq[:0], 0
	s.rqLen.Store(0)
	if r.doneN > 0 {
		s.tasksWG.Add(-r.doneN)
		r.doneN = 0
	}
}

// runInline runs the tasks the reader took on, in order. It returns errReplaced when the pinger took the
// reader role over while a task ran (checkInline); the task has been answered and the caller must stop
// reading.
func (s *session) runInline(r *reader) error {
	for len(r.ready) > 0 {
		// Take t off the list first: r.ready holds only tasks not started, for a takeover.
		t := r.ready[0]
		n := copy(r.ready, r.ready[1:])
		r.ready[n] = nil
		r.ready = r.ready[:n]
		start := monoNow()
		s.inlineAt.Store(start)
		res := s.execTask(t, start)
		if !s.inlineAt.CompareAndSwap(start, 0) {
			// The pinger gave the reader role to another goroutine: answer like a command goroutine.
			s.finishTask(t, &res)
			s.tasksWG.Done()
			return errReplaced
		}
		if res.Aborted {
			s.dropTask(t, &res)
			s.tasksWG.Done()
			continue
		}
		s.inlined.Add(1)
		r.doneN++
		s.queueInline(r, s.response(t, &res))
	}
	return nil
}

// checkInline replaces a reader stuck in an inline command for longer than inlineStall (pinger).
func (s *session) checkInline() {
	at := s.inlineAt.Load()
	if at == 0 || time.Duration(monoNow()-at) < inlineStall {
		return
	}
	if !s.inlineAt.CompareAndSwap(at, 0) {
		return // the command just ended
	}
	// From here the stuck goroutine no longer touches s.rd: its CompareAndSwap will fail.
	s.takeovers.Add(1)
	s.log.Warn("iscsi command stuck in the reader; starting a new reader", "initiator", s.params.InitiatorName, "tsih", s.tsih,
		"stuck", time.Duration(monoNow()-at))
	old := s.rd
	nr := &reader{}
	s.rd = nr
	s.srv.wg.Add(1) // the new reader stands in for the connection goroutine in Shutdown's wait
	go func() {
		defer s.srv.wg.Done()
		// The old reader's responses and the tasks it had not started yet are the new reader's now.
		nr.rq, nr.rqN, nr.doneN = old.rq, old.rqN, old.doneN
		s.flushInline(nr)
		for _, t := range old.ready {
			s.startWorker(t)
		}
		s.readSide(nr)
	}()
}
