package iscsi

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"strconv"
	"strings"
)

// CHAPConfig holds CHAP credentials (RFC 1994 with MD5, RFC 7143 12.1.3). User/Secret authenticate the
// initiator; MutualUser/MutualSecret, when set, are what the target answers with so the initiator can
// authenticate the target.
type CHAPConfig struct {
	User, Secret             string
	MutualUser, MutualSecret string // empty: one-way CHAP
}

func (c *CHAPConfig) mutual() bool { return c.MutualUser != "" || c.MutualSecret != "" }

// CHAP limits: our challenge is chapChallengeLen bytes; an initiator's challenge (mutual CHAP) must be
// between chapMinChallenge and chapMaxChallenge bytes (RFC 7143 12.1.3 asks for a challenge as long as the
// hash; 1024 bounds what we hash).
const (
	chapMD5          = 5
	chapChallengeLen = 16
	chapMinChallenge = 8
	chapMaxChallenge = 1024
)

type chapState uint8

const (
	chapWantAlgorithm chapState = iota // AuthMethod=CHAP chosen, CHAP_A expected
	chapWantResponse                   // challenge sent, CHAP_N and CHAP_R expected
	chapDone
)

// chapServer runs the target side of CHAP for one login. creds lists the credentials the initiator may
// authenticate with (one target's, or every target's for a discovery session).
type chapServer struct {
	creds     []*CHAPConfig
	state     chapState
	id        byte
	challenge []byte
	// Authenticated is the credential the initiator proved it holds, after chapDone.
	Authenticated *CHAPConfig
}

// chapResponse computes MD5(id || secret || challenge) (RFC 1994 4.1).
func chapResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// step consumes the CHAP keys of one login request and returns the answers. A non-zero status ends the
// login (0x0201 authentication failure, 0x0207 missing parameter). Answers never contain secrets; the
// caller must not log CHAP_R/CHAP_C values either way.
func (c *chapServer) step(kvs map[string]string) ([]KV, LoginStatus) {
	switch c.state {
	case chapWantAlgorithm:
		a, ok := kvs["CHAP_A"]
		if !ok {
			return nil, LoginMissingParam
		}
		found := false
		for _, v := range strings.Split(a, ",") {
			if n, err := parseNumber(v); err == nil && n == chapMD5 {
				found = true
				break
			}
		}
		if !found {
			return []KV{{"CHAP_A", valReject}}, LoginAuthFailure
		}
		var rnd [1 + chapChallengeLen]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, LoginTargetError
		}
		c.id = rnd[0]
		c.challenge = append([]byte(nil), rnd[1:]...)
		c.state = chapWantResponse
		return []KV{
			{"CHAP_A", strconv.Itoa(chapMD5)},
			{"CHAP_I", strconv.Itoa(int(c.id))},
			{"CHAP_C", encodeHex(c.challenge)},
		}, LoginSuccess
	case chapWantResponse:
		name, okN := kvs["CHAP_N"]
		rs, okR := kvs["CHAP_R"]
		if !okN || !okR {
			return nil, LoginAuthFailure
		}
		r, err := parseBinary(rs)
		if err != nil || len(r) != md5.Size {
			return nil, LoginAuthFailure
		}
		var match *CHAPConfig
		for _, cr := range c.creds {
			if cr.User != name {
				continue
			}
			if subtle.ConstantTimeCompare(r, chapResponse(c.id, cr.Secret, c.challenge)) == 1 {
				match = cr
				break
			}
		}
		if match == nil {
			return nil, LoginAuthFailure
		}
		is, okI := kvs["CHAP_I"]
		cs, okC := kvs["CHAP_C"]
		if okI != okC {
			return nil, LoginAuthFailure
		}
		if !okI {
			if match.mutual() {
				return nil, LoginAuthFailure // the target requires mutual CHAP
			}
			c.state, c.Authenticated = chapDone, match
			return nil, LoginSuccess
		}
		if !match.mutual() {
			return nil, LoginAuthFailure // no credentials to answer with
		}
		id, err := parseNumber(is)
		if err != nil || id > 255 {
			return nil, LoginAuthFailure
		}
		ch, err := parseBinary(cs)
		if err != nil || len(ch) < chapMinChallenge || len(ch) > chapMaxChallenge {
			return nil, LoginAuthFailure
		}
		if bytes.Equal(ch, c.challenge) {
			return nil, LoginAuthFailure // reflection attack: our own challenge sent back
		}
		c.state, c.Authenticated = chapDone, match
		return []KV{
			{"CHAP_N", match.MutualUser},
			{"CHAP_R", encodeHex(chapResponse(byte(id), match.MutualSecret, ch))},
		}, LoginSuccess
	}
	return nil, LoginInitiatorError // CHAP keys after authentication finished
}
