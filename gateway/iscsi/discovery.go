package iscsi

import (
	"net"
	"strconv"
)

// handleText answers a Text Request in full feature phase: SendTargets (RFC 7143 Appendix C) and
// MaxRecvDataSegmentLength; other login-only keys get Reject, unknown keys NotUnderstood. Long answers
// are split over several Text Responses (C bit, TTT), short of the initiator's MaxRecvDataSegmentLength.
func (s *session) handleText(p *PDU) error {
	h := &p.BHS
	mrdsl := int(s.sendMRDSL.Load())
	resp := func(data []byte, flags uint8, ttt uint32) {
		var r BHS
		r.SetOpcode(OpTextResp)
		r.SetFlags(flags)
		r.SetLUNField(h.LUNField())
		r.SetITT(h.ITT())
		r.SetTTT(ttt)
		s.sendPDU(&r, data, snAdvance)
	}
	// chunk sends text, keeping what does not fit for the initiator's next (empty) request.
	chunk := func(text []byte) {
		if len(text) <= mrdsl {
			resp(text, FlagFinal, ReservedTag)
			return
		}
		s.mu.Lock()
		ttt := s.newTTTLocked()
		s.textCont[ttt] = append([]byte(nil), text[mrdsl:]...)
		s.mu.Unlock()
		resp(append([]byte(nil), text[:mrdsl]...), FlagContinue, ttt) // F=0, C=1: more follows
	}
	if ttt := h.TTT(); ttt != ReservedTag {
		s.mu.Lock()
		rest, ok := s.textCont[ttt]
		delete(s.textCont, ttt)
		inputPending := len(s.textIn) > 0
		s.mu.Unlock()
		switch {
		case ok:
			chunk(rest)
			return nil
		case !inputPending:
			s.reject(h, RejectInvalidField)
			return nil
		}
	}
	s.mu.Lock()
	if len(s.textIn)+len(p.Data) > MaxTextLen {
		s.textIn = nil
		s.mu.Unlock()
		s.reject(h, RejectProtocolError)
		return protoErr(h, "more than %d bytes of text keys", MaxTextLen)
	}
	s.textIn = append(s.textIn, p.Data...)
	if h.Continue() {
		ttt := s.newTTTLocked()
		s.mu.Unlock()
		resp(nil, 0, ttt) // RFC 7143 11.10: an empty answer until the initiator's text is complete
		return nil
	}
	text := s.textIn
	s.textIn = nil
	s.mu.Unlock()
	kvs, err := ParseText(text)
	if err != nil {
		s.reject(h, RejectProtocolError)
		return nil
	}
	var ans []KV
	for _, kv := range kvs {
		def, known := keyTable[kv.Key]
		switch {
		case kv.Key == "SendTargets":
			ans = append(ans, s.sendTargets(kv.Value)...)
		case kv.Key == "MaxRecvDataSegmentLength":
			v, err := parseNumber(kv.Value)
			if err != nil || v < def.min || v > def.max {
				ans = append(ans, KV{kv.Key, valReject})
				continue
			}
			s.sendMRDSL.Store(int64(v))
			ans = append(ans, KV{kv.Key, strconv.Itoa(s.params.RecvDataSegmentLength)})
		case known:
			ans = append(ans, KV{kv.Key, valReject}) // login-only key in full feature phase
		default:
			ans = append(ans, KV{kv.Key, valNotUnderstood})
		}
	}
	chunk(AppendText(nil, ans...))
	return nil
}

// sendTargets lists the targets this session may see: "All" every visible target, an empty value the
// session's own target, a name that target if visible. Anything else is rejected.
func (s *session) sendTargets(v string) []KV {
	var list []*targetEntry
	switch {
	case v == "All":
		s.srv.mu.Lock()
		list = append(list, s.srv.order...)
		s.srv.mu.Unlock()
	case v == "":
		if s.tgt == nil {
			return []KV{{"SendTargets", valReject}}
		}
		list = []*targetEntry{s.tgt}
	case validName(v):
		if t := s.srv.lookupTarget(v); t != nil {
			list = []*targetEntry{t}
		}
	default:
		return []KV{{"SendTargets", valReject}}
	}
	var ans []KV
	for _, t := range list {
		if !s.visible(t) {
			continue
		}
		ans = append(ans, KV{"TargetName", t.Name})
		for _, a := range s.portals() {
			ans = append(ans, KV{"TargetAddress", a + ",1"})
		}
	}
	return ans
}

// visible reports whether the session's initiator may learn about t: the ACL admits it and, when t
// requires CHAP, this session authenticated with t's credentials.
func (s *session) visible(t *targetEntry) bool {
	if !t.allowed(s.params.InitiatorName) {
		return false
	}
	return t.CHAP == nil || s.authCred == t.CHAP
}

// portals returns the advertised addresses: the configured portals, or the connection's local address.
func (s *session) portals() []string {
	if len(s.srv.cfg.Portals) > 0 {
		return s.srv.cfg.Portals
	}
	if a, ok := s.nc.LocalAddr().(*net.TCPAddr); ok {
		return []string{net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))}
	}
	return []string{s.nc.LocalAddr().String()}
}
