package iscsi

import (
	"testing"
)

func answers(kvs []KV) map[string]string {
	m := make(map[string]string)
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestNegotiateOperational(t *testing.T) {
	n := newNegotiator(DefaultOffer())
	ans, st := n.negotiate([]KV{
		{"HeaderDigest", "CRC32C,None"},
		{"DataDigest", "None"},
		{"MaxConnections", "4"},
		{"InitialR2T", "No"},
		{"ImmediateData", "Yes"},
		{"MaxRecvDataSegmentLength", "131072"},
		{"MaxBurstLength", "262144"},
		{"FirstBurstLength", "524288"}, // more than MaxBurstLength: clamped
		{"DefaultTime2Wait", "0"},
		{"DefaultTime2Retain", "20"},
		{"MaxOutstandingR2T", "64"},
		{"DataPDUInOrder", "No"},
		{"DataSequenceInOrder", "Yes"},
		{"ErrorRecoveryLevel", "2"},
		{"IFMarker", "No"},
		{"OFMarkInt", "2048~8192"},
		{"X-com.example.Vendor", "1"},
		{"Frobnicate", "1"},
		{"InitiatorAlias", "host"},
	})
	if st != LoginSuccess {
		t.Fatalf("status 0x%04x", st)
	}
	want := map[string]string{
		"HeaderDigest":         "CRC32C",
		"DataDigest":           "None",
		"MaxConnections":       "1",
		"InitialR2T":           "No",
		"ImmediateData":        "Yes",
		"MaxBurstLength":       "262144",
		"FirstBurstLength":     "262144",
		"DefaultTime2Wait":     "2",
		"DefaultTime2Retain":   "0",
		"MaxOutstandingR2T":    "16",
		"DataPDUInOrder":       "Yes",
		"DataSequenceInOrder":  "Yes",
		"ErrorRecoveryLevel":   "0",
		"IFMarker":             "No",
		"OFMarkInt":            "Irrelevant",
		"X-com.example.Vendor": "NotUnderstood",
		"Frobnicate":           "NotUnderstood",
	}
	got := answers(ans)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	for _, k := range []string{"MaxRecvDataSegmentLength", "InitiatorAlias"} {
		if _, ok := got[k]; ok {
			t.Errorf("declarative key %s was answered", k)
		}
	}
	p := n.p
	if !p.HeaderDigest || p.DataDigest || p.InitialR2T || !p.ImmediateData || p.SendDataSegmentLength != 131072 ||
		p.MaxBurstLength != 262144 || p.FirstBurstLength != 262144 || p.MaxOutstandingR2T != 16 || p.InitiatorAlias != "host" {
		t.Errorf("params %+v", p)
	}
	if d := n.declarations(); len(d) != 1 || d[0] != (KV{"MaxRecvDataSegmentLength", "262144"}) {
		t.Errorf("declarations %v", d)
	}
	if d := n.declarations(); d != nil {
		t.Errorf("declared twice: %v", d)
	}
}

func TestNegotiateRejectsAndIrrelevant(t *testing.T) {
	cases := []struct {
		name string
		kvs  []KV
		key  string
		want string
	}{
		{"bool syntax", []KV{{"InitialR2T", "maybe"}}, "InitialR2T", "Reject"},
		{"below range", []KV{{"MaxBurstLength", "511"}}, "MaxBurstLength", "Reject"},
		{"above range", []KV{{"MaxOutstandingR2T", "65536"}}, "MaxOutstandingR2T", "Reject"},
		{"not a number", []KV{{"MaxBurstLength", "lots"}}, "MaxBurstLength", "Reject"},
		{"digest unknown", []KV{{"HeaderDigest", "MD5"}}, "HeaderDigest", "Reject"},
		{"target key from initiator", []KV{{"TargetAddress", "1.2.3.4"}}, "TargetAddress", "Reject"},
		{"discovery session key", []KV{{"SessionType", "Discovery"}, {"MaxBurstLength", "4096"}}, "MaxBurstLength", "Irrelevant"},
		{"discovery ImmediateData", []KV{{"ImmediateData", "Yes"}, {"SessionType", "Discovery"}}, "ImmediateData", "Irrelevant"},
		{"FirstBurst without unsolicited data", []KV{{"InitialR2T", "Yes"}, {"ImmediateData", "No"}, {"FirstBurstLength", "4096"}}, "FirstBurstLength", "Irrelevant"},
		{"SendTargets in login", []KV{{"SendTargets", "All"}}, "SendTargets", "Irrelevant"},
		{"DefaultTime2Wait max", []KV{{"DefaultTime2Wait", "7"}}, "DefaultTime2Wait", "7"},
		{"digest preference order", []KV{{"DataDigest", "None,CRC32C"}}, "DataDigest", "None"},
	}
	for _, c := range cases {
		n := newNegotiator(DefaultOffer())
		ans, st := n.negotiate(c.kvs)
		if st != LoginSuccess {
			t.Errorf("%s: status 0x%04x", c.name, st)
			continue
		}
		if got := answers(ans)[c.key]; got != c.want {
			t.Errorf("%s: %s=%q, want %q", c.name, c.key, got, c.want)
		}
	}
}

func TestNegotiateDigestsDisabled(t *testing.T) {
	o := DefaultOffer()
	o.AllowDigests = false
	n := newNegotiator(o)
	ans, _ := n.negotiate([]KV{{"HeaderDigest", "CRC32C,None"}, {"DataDigest", "CRC32C"}})
	if a := answers(ans); a["HeaderDigest"] != "None" || a["DataDigest"] != "Reject" {
		t.Fatalf("answers %v", a)
	}
}

func TestNegotiateFailures(t *testing.T) {
	n := newNegotiator(DefaultOffer())
	if _, st := n.negotiate([]KV{{"MaxBurstLength", "4096"}}); st != LoginSuccess {
		t.Fatal(st)
	}
	if _, st := n.negotiate([]KV{{"MaxBurstLength", "8192"}}); st != LoginInitiatorError {
		t.Fatalf("renegotiation: status 0x%04x, want 0x0200", st)
	}
	n = newNegotiator(DefaultOffer())
	if _, st := n.negotiate([]KV{{"SessionType", "Bogus"}}); st != LoginSessTypeUnsupp {
		t.Fatalf("bad SessionType: status 0x%04x", st)
	}
	// Answers to offers we never made are ignored, not renegotiation.
	n = newNegotiator(DefaultOffer())
	ans, st := n.negotiate([]KV{{"MaxBurstLength", "Reject"}, {"MaxBurstLength", "4096"}})
	if st != LoginSuccess || answers(ans)["MaxBurstLength"] != "4096" {
		t.Fatalf("%v 0x%04x", ans, st)
	}
}
