package iscsi

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"testing"
)

// chapInitiator plays the initiator side of CHAP for tests.
func chapAnswer(t *testing.T, ans []KV, secret string) (id byte, r string) {
	t.Helper()
	a := answers(ans)
	if a["CHAP_A"] != "5" {
		t.Fatalf("CHAP_A answer %q", a["CHAP_A"])
	}
	n, err := strconv.Atoi(a["CHAP_I"])
	if err != nil || n < 0 || n > 255 {
		t.Fatalf("CHAP_I %q", a["CHAP_I"])
	}
	c, err := parseBinary(a["CHAP_C"])
	if err != nil || len(c) != chapChallengeLen {
		t.Fatalf("CHAP_C %q: %v", a["CHAP_C"], err)
	}
	sum := md5.Sum(append(append([]byte{byte(n)}, secret...), c...))
	return byte(n), "0x" + hex.EncodeToString(sum[:])
}

func TestCHAPOneWay(t *testing.T) {
	cred := &CHAPConfig{User: "alice", Secret: "0123456789ab"}
	for _, enc := range []string{"hex", "base64"} {
		c := &chapServer{creds: []*CHAPConfig{cred}}
		ans, st := c.step(map[string]string{"CHAP_A": "7,5"})
		if st != LoginSuccess {
			t.Fatalf("CHAP_A: 0x%04x", st)
		}
		_, r := chapAnswer(t, ans, cred.Secret)
		if enc == "base64" {
			raw, _ := parseBinary(r)
			r = "0b" + base64.StdEncoding.EncodeToString(raw)
		}
		ans, st = c.step(map[string]string{"CHAP_N": "alice", "CHAP_R": r})
		if st != LoginSuccess || len(ans) != 0 || c.state != chapDone || c.Authenticated != cred {
			t.Fatalf("%s response: %v 0x%04x", enc, ans, st)
		}
	}
}

func TestCHAPMutual(t *testing.T) {
	cred := &CHAPConfig{User: "alice", Secret: "0123456789ab", MutualUser: "tgt", MutualSecret: "ba9876543210"}
	c := &chapServer{creds: []*CHAPConfig{cred}}
	ans, _ := c.step(map[string]string{"CHAP_A": "5"})
	_, r := chapAnswer(t, ans, cred.Secret)
	ic := []byte("initiator-challenge-16+")
	ans, st := c.step(map[string]string{"CHAP_N": "alice", "CHAP_R": r, "CHAP_I": "9", "CHAP_C": encodeHex(ic)})
	if st != LoginSuccess {
		t.Fatalf("0x%04x", st)
	}
	a := answers(ans)
	want := md5.Sum(append(append([]byte{9}, cred.MutualSecret...), ic...))
	if a["CHAP_N"] != "tgt" || a["CHAP_R"] != "0x"+hex.EncodeToString(want[:]) {
		t.Fatalf("mutual answer %v", a)
	}
}

func TestCHAPFailures(t *testing.T) {
	oneWay := &CHAPConfig{User: "alice", Secret: "0123456789ab"}
	mutual := &CHAPConfig{User: "alice", Secret: "0123456789ab", MutualUser: "tgt", MutualSecret: "ba9876543210"}
	cases := []struct {
		name  string
		cred  *CHAPConfig
		final func(r string, ours []byte) map[string]string
		want  LoginStatus
	}{
		{"wrong secret", oneWay, func(string, []byte) map[string]string {
			return map[string]string{"CHAP_N": "alice", "CHAP_R": "0x" + hex.EncodeToString(make([]byte, 16))}
		}, LoginAuthFailure},
		{"wrong name", oneWay, func(r string, _ []byte) map[string]string {
			return map[string]string{"CHAP_N": "bob", "CHAP_R": r}
		}, LoginAuthFailure},
		{"short response", oneWay, func(string, []byte) map[string]string {
			return map[string]string{"CHAP_N": "alice", "CHAP_R": "0x0102"}
		}, LoginAuthFailure},
		{"missing response", oneWay, func(string, []byte) map[string]string {
			return map[string]string{"CHAP_N": "alice"}
		}, LoginAuthFailure},
		{"mutual required", mutual, func(r string, _ []byte) map[string]string {
			return map[string]string{"CHAP_N": "alice", "CHAP_R": r}
		}, LoginAuthFailure},
		{"mutual not configured", oneWay, func(r string, _ []byte) map[string]string {
			return map[string]string{"CHAP_N": "alice", "CHAP_R": r, "CHAP_I": "1", "CHAP_C": encodeHex(make([]byte, 16))}
		}, LoginAuthFailure},
		{"reflected challenge", mutual, func(r string, ours []byte) map[string]string {
			return map[string]string{"CHAP_N": "alice", "CHAP_R": r, "CHAP_I": "1", "CHAP_C": encodeHex(ours)}
		}, LoginAuthFailure},
		{"challenge too short", mutual, func(r string, _ []byte) map[string]string {
			return map[string]string{"CHAP_N": "alice", "CHAP_R": r, "CHAP_I": "1", "CHAP_C": "0x0102"}
		}, LoginAuthFailure},
		{"challenge too long", mutual, func(r string, _ []byte) map[string]string {
			return map[string]string{"CHAP_N": "alice", "CHAP_R": r, "CHAP_I": "1", "CHAP_C": encodeHex(make([]byte, chapMaxChallenge+1))}
		}, LoginAuthFailure},
		{"identifier out of range", mutual, func(r string, _ []byte) map[string]string {
			return map[string]string{"CHAP_N": "alice", "CHAP_R": r, "CHAP_I": "256", "CHAP_C": encodeHex(make([]byte, 16))}
		}, LoginAuthFailure},
	}
	for _, tc := range cases {
		c := &chapServer{creds: []*CHAPConfig{tc.cred}}
		ans, _ := c.step(map[string]string{"CHAP_A": "5"})
		_, r := chapAnswer(t, ans, tc.cred.Secret)
		if _, st := c.step(tc.final(r, c.challenge)); st != tc.want {
			t.Errorf("%s: status 0x%04x, want 0x%04x", tc.name, st, tc.want)
		}
		if c.state == chapDone {
			t.Errorf("%s: authenticated", tc.name)
		}
	}
	// Algorithms: only MD5 (5); "56" must not pass as 5.
	for _, a := range []string{"56", "6,7", "x"} {
		c := &chapServer{creds: []*CHAPConfig{oneWay}}
		if ans, st := c.step(map[string]string{"CHAP_A": a}); st != LoginAuthFailure || answers(ans)["CHAP_A"] != "Reject" {
			t.Errorf("CHAP_A=%s: %v 0x%04x", a, ans, st)
		}
	}
	c := &chapServer{creds: []*CHAPConfig{oneWay}}
	if _, st := c.step(map[string]string{}); st != LoginMissingParam {
		t.Errorf("no CHAP_A: 0x%04x", st)
	}
}
