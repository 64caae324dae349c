package iscsi

// Params are the operational parameters of a session and connection after login (RFC 7143 13).
type Params struct {
	HeaderDigest, DataDigest bool
	MaxConnections           int
	InitialR2T               bool
	ImmediateData            bool
	// SendDataSegmentLength is the initiator's MaxRecvDataSegmentLength: the most data we put in one PDU
	// (bytes).
	SendDataSegmentLength int
	// RecvDataSegmentLength is our MaxRecvDataSegmentLength: the most data we accept in one PDU (bytes).
	RecvDataSegmentLength int
	MaxBurstLength        int // bytes per solicited Data-Out or Data-In sequence
	FirstBurstLength      int // bytes of unsolicited data (immediate + Data-Out) per command
	DefaultTime2Wait      int // seconds
	DefaultTime2Retain    int // seconds
	MaxOutstandingR2T     int // per task
	DataPDUInOrder        bool
	DataSequenceInOrder   bool
	ErrorRecoveryLevel    int
	Discovery             bool // SessionType=Discovery

	InitiatorName, InitiatorAlias, TargetName string
}

// defaultParams are the RFC 7143 defaults, in force until negotiated otherwise.
func defaultParams() Params {
	return Params{
		MaxConnections:        1,
		InitialR2T:            true,
		ImmediateData:         true,
		SendDataSegmentLength: 8192,
		RecvDataSegmentLength: 8192,
		MaxBurstLength:        262144,
		FirstBurstLength:      65536,
		DefaultTime2Wait:      2,
		DefaultTime2Retain:    20,
		MaxOutstandingR2T:     1,
		DataPDUInOrder:        true,
		DataSequenceInOrder:   true,
	}
}

// Offer is what the target answers in negotiations: its own preferences and limits.
type Offer struct {
	MaxRecvDataSegmentLength int // bytes, declared to the initiator
	MaxBurstLength           int // bytes
	FirstBurstLength         int // bytes
	MaxOutstandingR2T        int
	InitialR2T               bool
	ImmediateData            bool
	DefaultTime2Wait         int  // seconds
	DefaultTime2Retain       int  // seconds
	AllowDigests             bool // CRC32C accepted for HeaderDigest/DataDigest
}

// DefaultOffer is the product's negotiation stance: large PDUs and bursts, immediate and unsolicited
// data, several R2Ts in flight, ERL 0 and one connection per session.
func DefaultOffer() Offer {
	return Offer{
		MaxRecvDataSegmentLength: 256 << 10,
		MaxBurstLength:           16 << 20,
		FirstBurstLength:         1 << 20,
		MaxOutstandingR2T:        16,
		InitialR2T:               false,
		ImmediateData:            true,
		DefaultTime2Wait:         2,
		DefaultTime2Retain:       0,
		AllowDigests:             true,
	}
}

// keyKind is how a key's result is computed (RFC 7143 5.2, 13).
type keyKind uint8

const (
	kindBoolOr     keyKind = iota + 1 // result Yes if either side says Yes
	kindBoolAnd                       // result Yes only if both say Yes
	kindNumMin                        // result is the smaller value
	kindNumMax                        // result is the larger value
	kindDigest                        // list of None/CRC32C, the target picks
	kindDeclNum                       // declarative number (MaxRecvDataSegmentLength)
	kindInitDecl                      // declared by the initiator (names, SessionType)
	kindTargetDecl                    // declared by the target only
	kindSecurity                      // AuthMethod and CHAP_*; security stage only
	kindObsolete                      // markers: answer No / Irrelevant
	kindFFPOnly                       // SendTargets
)

type keyDef struct {
	kind     keyKind
	min, max uint64
	// session marks keys irrelevant in a discovery session (RFC 7143 13: "Irrelevant when
	// SessionType=Discovery").
	session bool
}

// keyTable lists every key of RFC 7143 section 13 (plus RFC 7144's iSCSIProtocolLevel) with its kind
// and range.
var keyTable = map[string]keyDef{
	"HeaderDigest":             {kind: kindDigest},
	"DataDigest":               {kind: kindDigest},
	"MaxConnections":           {kind: kindNumMin, min: 1, max: 65535},
	"SendTargets":              {kind: kindFFPOnly},
	"TargetName":               {kind: kindInitDecl},
	"InitiatorName":            {kind: kindInitDecl},
	"TargetAlias":              {kind: kindTargetDecl},
	"InitiatorAlias":           {kind: kindInitDecl},
	"TargetAddress":            {kind: kindTargetDecl},
	"TargetPortalGroupTag":     {kind: kindTargetDecl},
	"InitialR2T":               {kind: kindBoolOr, session: true},
	"ImmediateData":            {kind: kindBoolAnd, session: true},
	"MaxRecvDataSegmentLength": {kind: kindDeclNum, min: 512, max: 1<<24 - 1},
	"MaxBurstLength":           {kind: kindNumMin, min: 512, max: 1<<24 - 1, session: true},
	"FirstBurstLength":         {kind: kindNumMin, min: 512, max: 1<<24 - 1, session: true},
	"DefaultTime2Wait":         {kind: kindNumMax, min: 0, max: 3600},
	"DefaultTime2Retain":       {kind: kindNumMin, min: 0, max: 3600},
	"MaxOutstandingR2T":        {kind: kindNumMin, min: 1, max: 65535, session: true},
	"DataPDUInOrder":           {kind: kindBoolOr, session: true},
	"DataSequenceInOrder":      {kind: kindBoolOr, session: true},
	"ErrorRecoveryLevel":       {kind: kindNumMin, min: 0, max: 2},
	"SessionType":              {kind: kindInitDecl},
	"AuthMethod":               {kind: kindSecurity},
	"CHAP_A":                   {kind: kindSecurity},
	"CHAP_I":                   {kind: kindSecurity},
	"CHAP_C":                   {kind: kindSecurity},
	"CHAP_N":                   {kind: kindSecurity},
	"CHAP_R":                   {kind: kindSecurity},
	"OFMarker":                 {kind: kindObsolete},
	"IFMarker":                 {kind: kindObsolete},
	"OFMarkInt":                {kind: kindObsolete},
	"IFMarkInt":                {kind: kindObsolete},
	"iSCSIProtocolLevel":       {kind: kindNumMin, min: 0, max: 31},
}
