package iscsi

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Login stages (RFC 7143 11.12: CSG and NSG).
const (
	stageSecurity    = 0
	stageOperational = 1
	stageFullFeature = 3
)

// LoginError is a login that ended with a non-success status.
type LoginError struct {
	Status LoginStatus
	Reason string
}

func (e *LoginError) Error() string {
	return fmt.Sprintf("iscsi: login status 0x%04x: %s", uint16(e.Status), e.Reason)
}

func loginFail(st LoginStatus, format string, args ...any) *LoginError {
	return &LoginError{Status: st, Reason: fmt.Sprintf(format, args...)}
}

// loginMachine is the target side of the login phase of one connection. It is pure: handle turns one
// Login Request into one Login Response; the caller does the I/O and, on success, registers the session.
type loginMachine struct {
	srv    *Server
	neg    *negotiator
	offer  Offer
	lookup func(name string) *targetEntry
	creds  func() []*CHAPConfig // discovery: every target's CHAP credentials

	started    bool // the first PDU (ISID, CmdSN) has been seen
	identified bool // the first complete key set (names, target) has been checked
	isid       [6]byte
	tsih       uint16
	cid        uint16
	cmdSN      uint32
	statSN     uint32
	csg        uint8
	text       []byte // accumulated continuation text (C bit)
	tgt        *targetEntry
	authMethod string // "", "None" or "CHAP"
	chap       *chapServer
	authDone   bool
	sentTPGT   bool
	sentAlias  bool
	// final is set once the response transits to the full feature phase.
	final bool
}

// authRequired reports whether this login must authenticate with CHAP.
func (m *loginMachine) authRequired() bool {
	return m.tgt != nil && m.tgt.CHAP != nil
}

// handle processes one Login Request and returns the Login Response. A *LoginError means the response
// carries a failure status and the connection must be closed after sending it.
func (m *loginMachine) handle(req *PDU) (*PDU, error) {
	h := &req.BHS
	resp := &PDU{}
	r := &resp.BHS
	r.SetOpcode(OpLoginResp)
	r.SetISID(h.ISID())
	r.SetITT(h.ITT())
	if !m.started {
		m.isid, m.tsih, m.cid, m.cmdSN = h.ISID(), h.TSIH(), h.CID(), h.CmdSN()
		m.statSN = h.ExpStatSN()
	}
	r.SetStatSN(m.statSN)
	m.statSN++
	r.SetExpCmdSN(m.cmdSN)
	r.SetMaxCmdSN(m.cmdSN + uint32(m.srv.cfg.MaxCmdsPerSession) - 1)
	csg, nsg := h.CSG(), h.NSG()
	r.SetLoginStages(false, false, csg, nsg)

	fail := func(e *LoginError) (*PDU, error) {
		r.SetLoginStatus(e.Status)
		r.SetLoginStages(false, false, csg, nsg)
		resp.Data = nil
		return resp, e
	}
	if h.Opcode() != OpLoginReq {
		return fail(loginFail(LoginInitiatorError, "%s during login", opName(h.Opcode())))
	}
	if !m.started {
		if h.VersionMin() > 0 {
			return fail(loginFail(LoginUnsupportedVer, "VersionMin (byte 3) %d > 0", h.VersionMin()))
		}
		if csg != stageSecurity && csg != stageOperational {
			return fail(loginFail(LoginInitiatorError, "first CSG %d", csg))
		}
		m.csg = csg
	} else {
		if h.ISID() != m.isid || h.TSIH() != m.tsih || h.CID() != m.cid {
			return fail(loginFail(LoginInitiatorError, "ISID, TSIH or CID changed during login"))
		}
		if csg != m.csg {
			return fail(loginFail(LoginInitiatorError, "CSG %d, expected %d", csg, m.csg))
		}
	}
	if h.Transit() && (nsg <= csg || nsg == 2) {
		return fail(loginFail(LoginInitiatorError, "transit from stage %d to %d", csg, nsg))
	}
	if h.Transit() && h.Continue() {
		return fail(loginFail(LoginInitiatorError, "T and C both set"))
	}
	if len(m.text)+len(req.Data) > MaxTextLen {
		return fail(loginFail(LoginInitiatorError, "more than %d bytes of login keys", MaxTextLen))
	}
	m.text = append(m.text, req.Data...)
	if h.Continue() {
		m.started = true
		return resp, nil // empty answer: send the rest (RFC 7143 11.13 C bit)
	}
	kvs, err := ParseText(m.text)
	m.text = m.text[:0]
	if err != nil {
		return fail(loginFail(LoginInitiatorError, "%v", err))
	}

	var sec, other []KV
	for _, kv := range kvs {
		if def, ok := keyTable[kv.Key]; ok && def.kind == kindSecurity {
			sec = append(sec, kv)
		} else {
			other = append(other, kv)
		}
	}
	ans, st := m.neg.negotiate(other)
	if st != LoginSuccess {
		return fail(loginFail(st, "operational negotiation"))
	}
	if !m.identified {
		m.started, m.identified = true, true
		if e := m.identify(); e != nil {
			return fail(e)
		}
		if !m.neg.p.Discovery {
			ans = append(ans, KV{"TargetPortalGroupTag", "1"})
			m.sentTPGT = true
		}
	}

	transit := h.Transit()
	switch csg {
	case stageSecurity:
		secAns, e := m.security(sec)
		if e != nil {
			return fail(e)
		}
		ans = append(ans, secAns...)
		if transit && !m.authDone {
			if m.authMethod == "" && !m.authRequired() {
				m.authDone, m.authMethod = true, "None"
			} else if m.authMethod == "" || m.authMethod == "None" {
				return fail(loginFail(LoginAuthFailure, "no acceptable AuthMethod"))
			} else {
				transit = false // CHAP still running
			}
		}
	case stageOperational:
		if len(sec) > 0 {
			return fail(loginFail(LoginInitiatorError, "security key %s in operational stage", sec[0].Key))
		}
		if m.authRequired() && !m.authDone {
			return fail(loginFail(LoginAuthFailure, "CHAP required but security stage skipped"))
		}
		m.authDone = true
	default:
		return fail(loginFail(LoginInitiatorError, "CSG %d", csg))
	}
	if csg == stageOperational || (transit && nsg == stageFullFeature) {
		ans = append(ans, m.neg.declarations()...)
		if m.tgt != nil && m.tgt.Alias != "" && !m.sentAlias {
			ans = append(ans, KV{"TargetAlias", m.tgt.Alias})
			m.sentAlias = true
		}
	}
	if transit {
		m.csg = nsg
		if nsg == stageFullFeature {
			m.final = true
		}
	}
	r.SetLoginStages(transit, false, csg, nsg)
	resp.Data = AppendText(nil, ans...)
	return resp, nil
}

// identify checks the keys every leading login must declare in its first PDU and finds the target.
func (m *loginMachine) identify() *LoginError {
	p := &m.neg.p
	if p.InitiatorName == "" {
		return loginFail(LoginMissingParam, "InitiatorName missing")
	}
	if !validName(p.InitiatorName) {
		return loginFail(LoginInitiatorError, "InitiatorName %q", p.InitiatorName)
	}
	if m.tsih != 0 {
		// MaxConnections=1: no connection can join an existing session.
		if m.srv.sessionByTSIH(m.tsih) == nil {
			return loginFail(LoginSessionNotFound, "TSIH %d", m.tsih)
		}
		return loginFail(LoginTooManyConns, "MaxConnections=1")
	}
	if p.Discovery {
		return nil
	}
	if p.TargetName == "" {
		return loginFail(LoginMissingParam, "TargetName missing")
	}
	t := m.lookup(p.TargetName)
	if t == nil {
		return loginFail(LoginNotFound, "target %q", p.TargetName)
	}
	if !t.allowed(p.InitiatorName) {
		return loginFail(LoginForbidden, "initiator %s not allowed on %s", p.InitiatorName, t.Name)
	}
	m.tgt = t
	return nil
}

// security handles AuthMethod and the CHAP keys of one security-stage request.
func (m *loginMachine) security(sec []KV) ([]KV, *LoginError) {
	keys := make(map[string]string, len(sec))
	var ans []KV
	for _, kv := range sec {
		if _, dup := keys[kv.Key]; dup {
			return nil, loginFail(LoginInitiatorError, "key %s twice", kv.Key)
		}
		keys[kv.Key] = kv.Value
	}
	if am, ok := keys["AuthMethod"]; ok {
		delete(keys, "AuthMethod")
		if m.authMethod != "" {
			return nil, loginFail(LoginInitiatorError, "AuthMethod negotiated twice")
		}
		var creds []*CHAPConfig
		if m.tgt != nil && m.tgt.CHAP != nil {
			creds = []*CHAPConfig{m.tgt.CHAP}
		} else if m.neg.p.Discovery {
			creds = m.creds()
		}
		for _, v := range strings.Split(am, ",") {
			if v == "CHAP" && len(creds) > 0 {
				m.authMethod = v
				m.chap = &chapServer{creds: creds}
				break
			}
			if v == "None" && !m.authRequired() {
				m.authMethod, m.authDone = v, true
				break
			}
		}
		if m.authMethod == "" {
			return nil, loginFail(LoginAuthFailure, "AuthMethod %q not acceptable", am)
		}
		ans = append(ans, KV{"AuthMethod", m.authMethod})
	}
	if len(keys) == 0 {
		return ans, nil
	}
	if m.authMethod != "CHAP" {
		return nil, loginFail(LoginInitiatorError, "CHAP keys without AuthMethod=CHAP")
	}
	if m.authDone {
		return nil, loginFail(LoginInitiatorError, "CHAP keys after authentication")
	}
	chapAns, st := m.chap.step(keys)
	if st != LoginSuccess {
		return nil, loginFail(st, "CHAP authentication failed")
	}
	if m.chap.state == chapDone {
		m.authDone = true
	}
	return append(ans, chapAns...), nil
}

func (s *Server) sessionByTSIH(t uint16) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[t]
}

func (s *Server) allCHAPCreds() []*CHAPConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*CHAPConfig
	for _, t := range s.order {
		if t.CHAP != nil {
			out = append(out, t.CHAP)
		}
	}
	return out
}

// login runs the login phase on c and returns the registered session in full feature phase.
func (s *Server) login(c net.Conn) (*session, error) {
	c.SetDeadline(time.Now().Add(s.cfg.LoginTimeout))
	m := &loginMachine{
		srv:    s,
		neg:    newNegotiator(s.offer),
		offer:  s.offer,
		lookup: s.lookupTarget,
		creds:  s.allCHAPCreds,
	}
	for {
		// Before the login completes the initiator may assume our MaxRecvDataSegmentLength is 8192.
		req, err := ReadPDU(c, Digests{}, MaxTextLen)
		if err != nil {
			return nil, fmt.Errorf("reading login request: %w", err)
		}
		resp, lerr := m.handle(req)
		if lerr == nil && m.final {
			var ss *session
			ss, lerr = s.finishLogin(c, m, req)
			if lerr == nil {
				resp.BHS.SetTSIH(ss.tsih)
				if err := WritePDU(c, resp, Digests{}); err != nil {
					ss.close(err)
					ss.teardownUnstarted()
					return nil, err
				}
				c.SetDeadline(time.Time{})
				return ss, nil
			}
			var le *LoginError
			if errors.As(lerr, &le) {
				resp.BHS.SetLoginStatus(le.Status)
				resp.BHS.SetLoginStages(false, false, req.BHS.CSG(), req.BHS.NSG())
				resp.Data = nil
			}
		}
		if err := WritePDU(c, resp, Digests{}); err != nil {
			return nil, err
		}
		if lerr != nil {
			return nil, lerr
		}
	}
}

// finishLogin builds and registers the session once the final Login Response is due.
func (s *Server) finishLogin(c net.Conn, m *loginMachine, req *PDU) (*session, error) {
	p := m.neg.p
	p.RecvDataSegmentLength = m.offer.MaxRecvDataSegmentLength
	if p.FirstBurstLength > p.MaxBurstLength {
		p.FirstBurstLength = p.MaxBurstLength
	}
	ss := newSession(s, c, p, m.tgt, m.isid)
	ss.statSN = m.statSN
	ss.expCmdSN = m.cmdSN
	ss.cid = m.cid
	if m.chap != nil {
		ss.authCred = m.chap.Authenticated
	}
	st, err := s.register(ss)
	if err != nil {
		return nil, loginFail(st, "%v", err)
	}
	s.log.Info("iscsi session started", "initiator", p.InitiatorName, "isid", fmt.Sprintf("%x", m.isid),
		"target", p.TargetName, "tsih", ss.tsih, "discovery", p.Discovery, "remote", c.RemoteAddr().String(),
		"header_digest", p.HeaderDigest, "data_digest", p.DataDigest, "mrdsl_send", p.SendDataSegmentLength,
		"max_burst", p.MaxBurstLength, "first_burst", p.FirstBurstLength, "immediate_data", p.ImmediateData,
		"initial_r2t", p.InitialR2T, "max_r2t", p.MaxOutstandingR2T)
	return ss, nil
}

// nexusPort formats the SCSI initiator port name of an iSCSI initiator (RFC 7143 4.2.7.1 ",i,0x" ISID).
func nexusPort(name string, isid [6]byte) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteString(",i,0x")
	for _, x := range isid {
		b.WriteString(strconv.FormatUint(uint64(x)>>4, 16))
		b.WriteString(strconv.FormatUint(uint64(x)&15, 16))
	}
	return b.String()
}
