package iscsi

import (
	"errors"
	"testing"

	"opensan/gateway/scsi"
)

const (
	testIQN  = "iqn.2026-01.test:target"
	testInit = "iqn.2026-01.test:initiator"
)

func loginReq(csg, nsg uint8, transit, cont bool, kvs ...KV) *PDU {
	p := &PDU{Data: AppendText(nil, kvs...)}
	p.BHS.SetOpcode(OpLoginReq)
	p.BHS.SetImmediate(true)
	p.BHS.SetLoginStages(transit, cont, csg, nsg)
	p.BHS.SetISID([6]byte{0x80, 1, 2, 3, 4, 5})
	p.BHS.SetITT(1)
	p.BHS.SetCmdSN(100)
	return p
}

func testServer(t testing.TB, tcs ...TargetConfig) *Server {
	t.Helper()
	s := NewServer(Config{})
	for _, tc := range tcs {
		if tc.SCSI == nil {
			tc.SCSI = scsi.NewTarget(tc.Name)
		}
		if err := s.AddTarget(tc); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func newMachine(s *Server) *loginMachine {
	return &loginMachine{srv: s, neg: newNegotiator(s.offer), offer: s.offer, lookup: s.lookupTarget, creds: s.allCHAPCreds}
}

func leading(extra ...KV) []KV {
	return append([]KV{{"InitiatorName", testInit}, {"TargetName", testIQN}, {"SessionType", "Normal"}}, extra...)
}

func statusOf(err error) LoginStatus {
	var le *LoginError
	if errors.As(err, &le) {
		return le.Status
	}
	if err != nil {
		return 0xffff
	}
	return LoginSuccess
}

func TestLoginNoAuth(t *testing.T) {
	m := newMachine(testServer(t, TargetConfig{Name: testIQN, Alias: "disk"}))
	resp, err := m.handle(loginReq(0, 1, true, false, leading(KV{"AuthMethod", "None"})...))
	if err != nil {
		t.Fatal(err)
	}
	a := answers(mustParse(t, resp.Data))
	if a["AuthMethod"] != "None" || a["TargetPortalGroupTag"] != "1" || !resp.BHS.Transit() || resp.BHS.NSG() != 1 {
		t.Fatalf("security answer %v flags 0x%02x", a, resp.BHS.Flags())
	}
	if resp.BHS.ExpCmdSN() != 100 || resp.BHS.ITT() != 1 || resp.BHS.ISID() != [6]byte{0x80, 1, 2, 3, 4, 5} {
		t.Fatal("response header fields")
	}
	sn := resp.BHS.StatSN()
	resp, err = m.handle(loginReq(1, 3, true, false, KV{"ImmediateData", "Yes"}, KV{"MaxRecvDataSegmentLength", "65536"}))
	if err != nil || !m.final {
		t.Fatalf("operational: %v final=%v", err, m.final)
	}
	a = answers(mustParse(t, resp.Data))
	if a["MaxRecvDataSegmentLength"] != "262144" || a["TargetAlias"] != "disk" || a["ImmediateData"] != "Yes" {
		t.Fatalf("operational answer %v", a)
	}
	if resp.BHS.StatSN() != sn+1 || !resp.BHS.Transit() || resp.BHS.CSG() != 1 || resp.BHS.NSG() != 3 {
		t.Fatalf("final response: StatSN %d flags 0x%02x", resp.BHS.StatSN(), resp.BHS.Flags())
	}
	if m.neg.p.SendDataSegmentLength != 65536 {
		t.Fatal("initiator MaxRecvDataSegmentLength not kept")
	}
}

func mustParse(t *testing.T, b []byte) []KV {
	t.Helper()
	kvs, err := ParseText(b)
	if err != nil {
		t.Fatal(err)
	}
	return kvs
}

func TestLoginFailures(t *testing.T) {
	chap := &CHAPConfig{User: "u", Secret: "secretsecret"}
	srv := testServer(t,
		TargetConfig{Name: testIQN},
		TargetConfig{Name: "iqn.2026-01.test:acl", Allow: []string{"iqn.2026-01.test:other"}},
		TargetConfig{Name: "iqn.2026-01.test:chap", CHAP: chap},
	)
	cases := []struct {
		name string
		reqs []*PDU
		want LoginStatus
	}{
		{"missing InitiatorName", []*PDU{loginReq(0, 1, true, false, KV{"TargetName", testIQN}, KV{"AuthMethod", "None"})}, LoginMissingParam},
		{"missing TargetName", []*PDU{loginReq(0, 1, true, false, KV{"InitiatorName", testInit}, KV{"AuthMethod", "None"})}, LoginMissingParam},
		{"unknown target", []*PDU{loginReq(0, 1, true, false, KV{"InitiatorName", testInit}, KV{"TargetName", "iqn.2026-01.test:nope"})}, LoginNotFound},
		{"ACL", []*PDU{loginReq(0, 1, true, false, KV{"InitiatorName", testInit}, KV{"TargetName", "iqn.2026-01.test:acl"})}, LoginForbidden},
		{"version", []*PDU{func() *PDU { p := loginReq(0, 1, true, false, leading()...); p.BHS[3] = 1; return p }()}, LoginUnsupportedVer},
		{"NSG 2", []*PDU{loginReq(0, 2, true, false, leading()...)}, LoginInitiatorError},
		{"transit backwards", []*PDU{loginReq(1, 0, true, false, leading()...)}, LoginInitiatorError},
		{"first CSG 3", []*PDU{loginReq(3, 3, false, false, leading()...)}, LoginInitiatorError},
		{"unknown TSIH", []*PDU{func() *PDU { p := loginReq(0, 1, true, false, leading()...); p.BHS.SetTSIH(77); return p }()}, LoginSessionNotFound},
		{"CHAP skipped", []*PDU{loginReq(1, 3, true, false, KV{"InitiatorName", testInit}, KV{"TargetName", "iqn.2026-01.test:chap"})}, LoginAuthFailure},
		{"CHAP refused None", []*PDU{loginReq(0, 1, true, false, KV{"InitiatorName", testInit}, KV{"TargetName", "iqn.2026-01.test:chap"}, KV{"AuthMethod", "None"})}, LoginAuthFailure},
		{"CHAP keys without CHAP", []*PDU{loginReq(0, 1, false, false, leading(KV{"AuthMethod", "None"}, KV{"CHAP_A", "5"})...)}, LoginInitiatorError},
		{"renegotiation", []*PDU{
			loginReq(1, 1, false, false, leading(KV{"MaxBurstLength", "4096"})...),
			loginReq(1, 3, true, false, KV{"MaxBurstLength", "4096"}),
		}, LoginInitiatorError},
		{"stage mismatch", []*PDU{
			loginReq(0, 1, false, false, leading(KV{"AuthMethod", "None"})...),
			loginReq(1, 3, true, false),
		}, LoginInitiatorError},
		{"not a login PDU", []*PDU{func() *PDU { p := loginReq(0, 1, true, false, leading()...); p.BHS.SetOpcode(OpTextReq); return p }()}, LoginInitiatorError},
		{"bad text", []*PDU{{BHS: loginReq(0, 1, true, false).BHS, Data: []byte("garbage\x00")}}, LoginInitiatorError},
	}
	for _, c := range cases {
		m := newMachine(srv)
		var err error
		var resp *PDU
		for _, r := range c.reqs {
			resp, err = m.handle(r)
			if err != nil {
				break
			}
		}
		if got := statusOf(err); got != c.want {
			t.Errorf("%s: status 0x%04x (%v), want 0x%04x", c.name, got, err, c.want)
			continue
		}
		if resp.BHS.StatusClass() != uint8(c.want>>8) || resp.BHS.StatusDetail() != uint8(c.want) || resp.BHS.Transit() {
			t.Errorf("%s: response status %02x%02x flags 0x%02x", c.name, resp.BHS.StatusClass(), resp.BHS.StatusDetail(), resp.BHS.Flags())
		}
	}
}

func TestLoginCHAPAndContinuation(t *testing.T) {
	cred := &CHAPConfig{User: "u", Secret: "secretsecret"}
	m := newMachine(testServer(t, TargetConfig{Name: testIQN, CHAP: cred}))
	// The leading keys split over two PDUs with the C bit.
	text := AppendText(nil, leading(KV{"AuthMethod", "CHAP,None"})...)
	first := loginReq(0, 1, false, true)
	first.Data = text[:10]
	resp, err := m.handle(first)
	if err != nil || len(resp.Data) != 0 || resp.BHS.Transit() {
		t.Fatalf("continuation answer: %v %q", err, resp.Data)
	}
	second := loginReq(0, 1, false, false)
	second.Data = text[10:]
	resp, err = m.handle(second)
	if err != nil || answers(mustParse(t, resp.Data))["AuthMethod"] != "CHAP" {
		t.Fatalf("AuthMethod: %v %q", err, resp.Data)
	}
	resp, err = m.handle(loginReq(0, 1, false, false, KV{"CHAP_A", "5"}))
	if err != nil {
		t.Fatal(err)
	}
	_, r := chapAnswer(t, mustParse(t, resp.Data), cred.Secret)
	// Asking to transit before authentication completes is refused with T=0; with the response it passes.
	resp, err = m.handle(loginReq(0, 1, true, false, KV{"CHAP_N", "u"}, KV{"CHAP_R", r}))
	if err != nil || !resp.BHS.Transit() || !m.authDone {
		t.Fatalf("CHAP response: %v T=%v", err, resp.BHS.Transit())
	}
	if _, err := m.handle(loginReq(1, 3, true, false)); err != nil || !m.final {
		t.Fatalf("operational: %v", err)
	}
}

func TestLoginDiscoveryCHAPOptional(t *testing.T) {
	srv := testServer(t, TargetConfig{Name: testIQN}, TargetConfig{Name: "iqn.2026-01.test:chap", CHAP: &CHAPConfig{User: "u", Secret: "secretsecret"}})
	m := newMachine(srv)
	resp, err := m.handle(loginReq(0, 3, true, false, KV{"InitiatorName", testInit}, KV{"SessionType", "Discovery"}, KV{"AuthMethod", "None"}))
	if err != nil || !m.final || !resp.BHS.Transit() {
		t.Fatalf("discovery login: %v", err)
	}
	if a := answers(mustParse(t, resp.Data)); a["MaxRecvDataSegmentLength"] == "" || a["TargetPortalGroupTag"] != "" {
		t.Fatalf("discovery answers %v", a)
	}
	m = newMachine(srv)
	resp, err = m.handle(loginReq(0, 1, false, false, KV{"InitiatorName", testInit}, KV{"SessionType", "Discovery"}, KV{"AuthMethod", "CHAP,None"}))
	if err != nil || answers(mustParse(t, resp.Data))["AuthMethod"] != "CHAP" {
		t.Fatalf("discovery with CHAP offered: %v", err)
	}
}

// FuzzLoginNegotiation drives the login state machine with a sequence of login requests cut from the
// fuzz input: it must answer each with a response or a LoginError, never panic, and never reach the full
// feature phase without authentication when the target requires CHAP.
func FuzzLoginNegotiation(f *testing.F) {
	seed := func(reqs ...*PDU) []byte {
		var b []byte
		for _, r := range reqs {
			b = append(b, r.BHS[1])
			b = append(b, byte(len(r.Data)>>8), byte(len(r.Data)))
			b = append(b, r.Data...)
		}
		return b
	}
	f.Add(seed(loginReq(0, 1, true, false, leading(KV{"AuthMethod", "None"})...), loginReq(1, 3, true, false, KV{"MaxBurstLength", "4096"})), false)
	f.Add(seed(loginReq(0, 1, false, false, leading(KV{"AuthMethod", "CHAP"})...), loginReq(0, 1, false, false, KV{"CHAP_A", "5"}),
		loginReq(0, 1, true, false, KV{"CHAP_N", "u"}, KV{"CHAP_R", "0x00112233445566778899aabbccddeeff"})), true)
	f.Add(seed(loginReq(1, 3, true, false, KV{"InitiatorName", testInit}, KV{"SessionType", "Discovery"})), false)
	f.Fuzz(func(t *testing.T, in []byte, chap bool) {
		tc := TargetConfig{Name: testIQN}
		if chap {
			tc.CHAP = &CHAPConfig{User: "u", Secret: "secretsecret"}
		}
		m := newMachine(testServer(t, tc))
		for len(in) >= 3 && !m.final {
			flags := in[0]
			n := int(in[1])<<8 | int(in[2])
			in = in[3:]
			n = min(n, len(in))
			req := loginReq(0, 0, false, false)
			req.BHS[1] = flags
			req.Data = in[:n]
			in = in[n:]
			resp, err := m.handle(req)
			if resp == nil {
				t.Fatal("no response")
			}
			if err != nil {
				if statusOf(err) == LoginSuccess || statusOf(err) == 0xffff {
					t.Fatalf("error without a failure status: %v", err)
				}
				return
			}
		}
		if m.final && chap && m.neg.p.TargetName != "" && !m.neg.p.Discovery && !m.authDone {
			t.Fatal("full feature phase without CHAP")
		}
	})
}
