package iscsi

import (
	"errors"

	"opensan/gateway/scsi"
)

// TMF response codes (RFC 7143 11.6.1).
const (
	tmfRespComplete       = 0
	tmfRespNoTask         = 1
	tmfRespNoLUN          = 2
	tmfRespReassignNotSup = 4
	tmfRespNotSupported   = 5
	tmfRespRejected       = 255
)

// handleTMF runs a Task Management Function Request. Tasks still waiting for Data-Out are aborted here
// (the SCSI layer has not seen them); running tasks are aborted by the scsi.Target, whose methods return
// once the tasks have stopped, so the TMF response follows the end of every affected task and no response
// is sent for aborted tasks.
func (s *session) handleTMF(p *PDU) error {
	h := &p.BHS
	fn := h.TMFunction()
	itt := h.ITT()
	lun := decodeLUN(h.LUNField())
	s.mu.Lock()
	loggingOut := s.loggingOut
	s.mu.Unlock()
	if loggingOut {
		s.reject(h, RejectWaitingLogout)
		return nil
	}
	answer := func(code uint8) {
		var r BHS
		r.SetOpcode(OpTaskMgmtResp)
		r.SetFlags(FlagFinal)
		r.SetResponse(code)
		r.SetITT(itt)
		s.sendPDU(&r, nil, snAdvance)
	}
	// async runs the blocking SCSI-layer part on its own goroutine so the reader keeps reading.
	async := func(f func() scsi.TMFResponse, after func()) {
		s.tasksWG.Add(1)
		go func() {
			defer s.tasksWG.Done()
			answer(uint8(f()))
			if after != nil {
				after()
			}
		}()
	}
	t := s.tgt.SCSI
	switch fn {
	case TMFAbortTask:
		rtt := h.ReferencedTaskTag()
		s.mu.Lock()
		tk := s.tasks[rtt]
		if tk != nil && tk.state == taskWaitingData {
			s.abortLocked(tk)
			s.mu.Unlock()
			answer(tmfRespComplete)
			return nil
		}
		s.mu.Unlock()
		if tk == nil {
			// Not known here: never received, or already answered (RFC 7143 11.5.1).
			answer(tmfRespNoTask)
			return nil
		}
		async(func() scsi.TMFResponse { return t.AbortTask(s.nexus, tk.lun, uint64(rtt)) }, nil)
	case TMFAbortTaskSet:
		s.abortWaiting(func(tk *task) bool { return tk.lun == lun })
		async(func() scsi.TMFResponse { return t.AbortTaskSet(s.nexus, lun) }, nil)
	case TMFClearTaskSet, TMFLUNReset:
		for _, o := range s.srv.sessionsOf(s.tgt) {
			o.abortWaiting(func(tk *task) bool { return tk.lun == lun })
		}
		if fn == TMFClearTaskSet {
			async(func() scsi.TMFResponse { return t.ClearTaskSet(s.nexus, lun) }, nil)
		} else {
			async(func() scsi.TMFResponse { return t.LUNReset(s.nexus, lun) }, nil)
		}
	case TMFTargetWarmReset, TMFTargetColdReset:
		cold := fn == TMFTargetColdReset
		others := s.srv.sessionsOf(s.tgt)
		for _, o := range others {
			o.abortWaiting(func(*task) bool { return true })
		}
		var after func()
		if cold {
			// RFC 7143 11.5.1: after a cold reset the target drops every connection of the target.
			after = func() {
				for _, o := range others {
					if o != s {
						o.close(errors.New("target cold reset"))
					}
				}
				s.send(&txItem{done: func() { s.close(errors.New("target cold reset")) }})
			}
		}
		async(func() scsi.TMFResponse { return t.TargetReset(s.nexus, cold) }, after)
	case TMFTaskReassign:
		answer(tmfRespReassignNotSup) // ERL 0: no connection allegiance reassignment
	case TMFClearACA:
		answer(tmfRespNotSupported) // NACA is not supported, so there is never an ACA to clear
	default:
		answer(tmfRespRejected)
	}
	return nil
}

// abortWaiting aborts this session's tasks that still wait for Data-Out and match pick.
func (s *session) abortWaiting(pick func(*task) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tk := range s.tasks {
		if tk.state == taskWaitingData && pick(tk) {
			s.abortLocked(tk)
		}
	}
}
