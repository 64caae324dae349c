package iscsi

import (
	"strconv"
	"strings"
)

// Answer values with a special meaning (RFC 7143 5.2, 6.2).
const (
	valReject        = "Reject"
	valIrrelevant    = "Irrelevant"
	valNotUnderstood = "NotUnderstood"
	valYes           = "Yes"
	valNo            = "No"
)

// negotiator holds the operational parameters negotiated so far on one connection during login. It is a
// pure state machine: keys in, answers out.
type negotiator struct {
	offer    Offer
	p        Params
	seen     map[string]bool
	declared bool // our MaxRecvDataSegmentLength has been declared
}

func newNegotiator(o Offer) *negotiator {
	p := defaultParams()
	return &negotiator{offer: o, p: p, seen: make(map[string]bool)}
}

// isAnswerValue reports values an initiator uses to answer keys we offered. We never offer negotiated
// keys, so such values carry no information for us and get no answer.
func isAnswerValue(v string) bool {
	return v == valReject || v == valIrrelevant || v == valNotUnderstood
}

// negotiate answers the operational (non-security) keys of one login request. It returns the answers in
// the order of the keys, and a non-zero LoginStatus when the login must fail (a key negotiated twice, an
// unsupported SessionType).
func (n *negotiator) negotiate(kvs []KV) ([]KV, LoginStatus) {
	// SessionType decides which keys are irrelevant, whatever its position in the PDU.
	for _, kv := range kvs {
		if kv.Key == "SessionType" {
			switch kv.Value {
			case "Discovery":
				n.p.Discovery = true
			case "Normal":
				n.p.Discovery = false
			default:
				return []KV{{kv.Key, valReject}}, LoginSessTypeUnsupp
			}
		}
	}
	var ans []KV
	firstBurstAt := -1
	for _, kv := range kvs {
		def, known := keyTable[kv.Key]
		if !known {
			ans = append(ans, KV{kv.Key, valNotUnderstood})
			continue
		}
		if def.kind == kindSecurity {
			continue // the caller's CHAP state machine answers these
		}
		if isAnswerValue(kv.Value) {
			continue
		}
		if n.seen[kv.Key] {
			// RFC 7143 6.2: renegotiating or redeclaring a key is an initiator error.
			return nil, LoginInitiatorError
		}
		n.seen[kv.Key] = true
		if len(kv.Value) > MaxValueLen && kv.Key != "TargetAddress" {
			ans = append(ans, KV{kv.Key, valReject})
			continue
		}
		if def.session && n.p.Discovery {
			ans = append(ans, KV{kv.Key, valIrrelevant})
			continue
		}
		switch def.kind {
		case kindDigest:
			v, ok := n.pickDigest(kv.Value)
			if !ok {
				ans = append(ans, KV{kv.Key, valReject})
				continue
			}
			on := v == "CRC32C"
			if kv.Key == "HeaderDigest" {
				n.p.HeaderDigest = on
			} else {
				n.p.DataDigest = on
			}
			ans = append(ans, KV{kv.Key, v})
		case kindBoolOr, kindBoolAnd:
			var init bool
			switch kv.Value {
			case valYes:
				init = true
			case valNo:
			default:
				ans = append(ans, KV{kv.Key, valReject})
				continue
			}
			res := n.boolResult(kv.Key, def.kind, init)
			ans = append(ans, KV{kv.Key, yesNo(res)})
		case kindNumMin, kindNumMax:
			v, err := parseNumber(kv.Value)
			if err != nil || v < def.min || v > def.max {
				ans = append(ans, KV{kv.Key, valReject})
				continue
			}
			res := n.numResult(kv.Key, def.kind, int(v))
			if kv.Key == "FirstBurstLength" {
				firstBurstAt = len(ans)
			}
			ans = append(ans, KV{kv.Key, strconv.Itoa(res)})
		case kindDeclNum: // MaxRecvDataSegmentLength: the initiator's receive limit, our send limit
			v, err := parseNumber(kv.Value)
			if err != nil || v < def.min || v > def.max {
				ans = append(ans, KV{kv.Key, valReject})
				continue
			}
			n.p.SendDataSegmentLength = int(v)
		case kindInitDecl:
			switch kv.Key {
			case "InitiatorName":
				n.p.InitiatorName = kv.Value
			case "TargetName":
				n.p.TargetName = kv.Value
			case "InitiatorAlias":
				n.p.InitiatorAlias = kv.Value
			}
		case kindTargetDecl:
			ans = append(ans, KV{kv.Key, valReject}) // only the target declares these
		case kindObsolete:
			if strings.HasSuffix(kv.Key, "Marker") {
				if kv.Value != valYes && kv.Value != valNo {
					ans = append(ans, KV{kv.Key, valReject})
				} else {
					ans = append(ans, KV{kv.Key, valNo}) // boolean AND with our No
				}
			} else {
				ans = append(ans, KV{kv.Key, valIrrelevant}) // markers are off
			}
		case kindFFPOnly:
			ans = append(ans, KV{kv.Key, valIrrelevant}) // SendTargets is a full feature phase request
		}
	}
	// FirstBurstLength may not exceed MaxBurstLength and is irrelevant when no unsolicited data flows
	// (RFC 7143 13.14).
	if n.p.FirstBurstLength > n.p.MaxBurstLength {
		n.p.FirstBurstLength = n.p.MaxBurstLength
	}
	if firstBurstAt >= 0 {
		if n.p.InitialR2T && !n.p.ImmediateData {
			ans[firstBurstAt].Value = valIrrelevant
		} else {
			ans[firstBurstAt].Value = strconv.Itoa(n.p.FirstBurstLength)
		}
	}
	return ans, LoginSuccess
}

func (n *negotiator) pickDigest(list string) (string, bool) {
	for _, v := range strings.Split(list, ",") {
		switch v {
		case "None":
			return v, true
		case "CRC32C":
			if n.offer.AllowDigests {
				return v, true
			}
		}
	}
	return "", false
}

func (n *negotiator) boolResult(key string, kind keyKind, init bool) bool {
	var ours bool
	switch key {
	case "InitialR2T":
		ours = n.offer.InitialR2T
	case "ImmediateData":
		ours = n.offer.ImmediateData
	case "DataPDUInOrder", "DataSequenceInOrder":
		ours = true // we place data by offset but validate order; Yes keeps that simple
	}
	res := init && ours
	if kind == kindBoolOr {
		res = init || ours
	}
	switch key {
	case "InitialR2T":
		n.p.InitialR2T = res
	case "ImmediateData":
		n.p.ImmediateData = res
	case "DataPDUInOrder":
		n.p.DataPDUInOrder = res
	case "DataSequenceInOrder":
		n.p.DataSequenceInOrder = res
	}
	return res
}

func (n *negotiator) numResult(key string, kind keyKind, init int) int {
	var ours int
	switch key {
	case "MaxConnections":
		ours = 1
	case "MaxBurstLength":
		ours = n.offer.MaxBurstLength
	case "FirstBurstLength":
		ours = n.offer.FirstBurstLength
	case "MaxOutstandingR2T":
		ours = n.offer.MaxOutstandingR2T
	case "DefaultTime2Wait":
		ours = n.offer.DefaultTime2Wait
	case "DefaultTime2Retain":
		ours = n.offer.DefaultTime2Retain
	case "ErrorRecoveryLevel":
		ours = 0
	case "iSCSIProtocolLevel":
		ours = 1 // RFC 7143
	}
	res := min(init, ours)
	if kind == kindNumMax {
		res = max(init, ours)
	}
	switch key {
	case "MaxConnections":
		n.p.MaxConnections = res
	case "MaxBurstLength":
		n.p.MaxBurstLength = res
	case "FirstBurstLength":
		n.p.FirstBurstLength = res
	case "MaxOutstandingR2T":
		n.p.MaxOutstandingR2T = res
	case "DefaultTime2Wait":
		n.p.DefaultTime2Wait = res
	case "DefaultTime2Retain":
		n.p.DefaultTime2Retain = res
	case "ErrorRecoveryLevel":
		n.p.ErrorRecoveryLevel = res
	}
	return res
}

// declarations returns the keys the target declares once per login: its MaxRecvDataSegmentLength.
func (n *negotiator) declarations() []KV {
	if n.declared {
		return nil
	}
	n.declared = true
	n.p.RecvDataSegmentLength = n.offer.MaxRecvDataSegmentLength
	return []KV{{"MaxRecvDataSegmentLength", strconv.Itoa(n.offer.MaxRecvDataSegmentLength)}}
}

func yesNo(b bool) string {
	if b {
		return valYes
	}
	return valNo
}
