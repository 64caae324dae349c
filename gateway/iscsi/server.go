package iscsi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"opensan/gateway/scsi"
)

// TargetConfig describes one iSCSI target exported by a Server.
type TargetConfig struct {
	Name  string // IQN, eui. or naa. name
	Alias string // optional TargetAlias
	SCSI  *scsi.Target
	CHAP  *CHAPConfig // nil: AuthMethod=None accepted; non-nil: CHAP required
	Allow []string    // initiator names allowed to discover and log in; empty: any
}

// Config configures a Server. Zero values get the defaults noted.
type Config struct {
	// Portals are the "host:port" addresses advertised in SendTargets (TargetAddress=host:port,1). Empty:
	// the local address of the connection that asks.
	Portals []string
	// Logger receives connection and session events; nil means slog.Default(). CHAP secrets, challenges
	// and responses are never logged.
	Logger *slog.Logger

	MaxSessions       int           // sessions (normal and discovery) at once; default 256
	MaxCmdsPerSession int           // queue depth offered through the CmdSN window; default 128
	LoginTimeout      time.Duration // whole login phase; default 15 s
	NopInInterval     time.Duration // idle time before we ping an initiator; default 15 s
	NopInTimeout      time.Duration // time an initiator has to answer a ping; default 60 s, because single-threaded initiators (libiscsi sync clients) may not read their socket for a minute
	// MaxSessionBuffer bounds the write data buffered per session (bytes); default 256 MiB. A write whose
	// Expected Data Transfer Length does not fit gets TASK SET FULL.
	MaxSessionBuffer int64
	// Offer is the negotiation stance; the zero value means DefaultOffer().
	Offer Offer
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("iscsi: server closed")

// Server is an iSCSI target portal group: a set of targets reachable through the listeners given to Serve.
type Server struct {
	cfg   Config
	log   *slog.Logger
	offer Offer

	mu        sync.Mutex
	targets   map[string]*targetEntry
	order     []*targetEntry // AddTarget order, for SendTargets
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{} // connections still logging in
	sessions  map[uint16]*session   // by TSIH
	nextTSIH  uint16
	closing   bool
	wg        sync.WaitGroup // every connection goroutine
}

type targetEntry struct {
	TargetConfig
	allow map[string]bool
}

// NewServer returns a Server with no targets.
func NewServer(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 256
	}
	if cfg.MaxCmdsPerSession <= 0 {
		cfg.MaxCmdsPerSession = 128
	}
	if cfg.LoginTimeout <= 0 {
		cfg.LoginTimeout = 15 * time.Second
	}
	if cfg.NopInInterval <= 0 {
		cfg.NopInInterval = 15 * time.Second
	}
	if cfg.NopInTimeout <= 0 {
		cfg.NopInTimeout = 60 * time.Second
	}
	if cfg.MaxSessionBuffer <= 0 {
		cfg.MaxSessionBuffer = 256 << 20
	}
	offer := cfg.Offer
	if offer == (Offer{}) {
		offer = DefaultOffer()
	}
	return &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		offer:     offer,
		targets:   make(map[string]*targetEntry),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]struct{}),
		sessions:  make(map[uint16]*session),
	}
}

// validName checks the iSCSI name formats of RFC 7143 4.2.7 loosely: a known prefix and at most 223
// bytes.
func validName(n string) bool {
	if len(n) == 0 || len(n) > 223 {
		return false
	}
	l := strings.ToLower(n)
	return strings.HasPrefix(l, "iqn.") || strings.HasPrefix(l, "eui.") || strings.HasPrefix(l, "naa.")
}

// AddTarget exports a target. Targets can be added while the server runs.
func (s *Server) AddTarget(tc TargetConfig) error {
	if !validName(tc.Name) {
		return fmt.Errorf("iscsi: target name %q is not an iqn., eui. or naa. name of at most 223 bytes", tc.Name)
	}
	if tc.SCSI == nil {
		return fmt.Errorf("iscsi: target %s has no SCSI target", tc.Name)
	}
	if c := tc.CHAP; c != nil {
		if c.User == "" || c.Secret == "" {
			return fmt.Errorf("iscsi: target %s: CHAP needs a user and a secret", tc.Name)
		}
		if c.mutual() && (c.MutualUser == "" || c.MutualSecret == "") {
			return fmt.Errorf("iscsi: target %s: mutual CHAP needs a user and a secret", tc.Name)
		}
		if c.mutual() && c.MutualSecret == c.Secret {
			// RFC 7143 12.1.3: the same secret must not serve both directions.
			return fmt.Errorf("iscsi: target %s: mutual CHAP secret equals the initiator secret", tc.Name)
		}
	}
	e := &targetEntry{TargetConfig: tc}
	if len(tc.Allow) > 0 {
		e.allow = make(map[string]bool)
		for _, a := range tc.Allow {
			e.allow[strings.ToLower(a)] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(tc.Name)
	if _, dup := s.targets[key]; dup {
		return fmt.Errorf("iscsi: target %s already exists", tc.Name)
	}
	s.targets[key] = e
	s.order = append(s.order, e)
	return nil
}

func (s *Server) lookupTarget(name string) *targetEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.targets[strings.ToLower(name)]
}

func (e *targetEntry) allowed(initiator string) bool {
	return e.allow == nil || e.allow[strings.ToLower(initiator)]
}

// Serve accepts connections on l until Shutdown. It always returns a non-nil error: ErrServerClosed after
// Shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			delete(s.listeners, l)
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				s.mu.Lock()
				s.listeners[l] = struct{}{}
				s.mu.Unlock()
				continue
			}
			return err
		}
		delay = 0
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handleConn(c)
	}
}

// handleConn runs login, then the session, on one TCP connection.
func (s *Server) handleConn(c net.Conn) {
	defer s.wg.Done()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	sess, err := s.login(c)
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	if err != nil {
		s.log.Info("iscsi login failed", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	sess.run()
}

// Shutdown stops accepting connections, asks every initiator to log out (Async Message), lets in-flight
// commands finish, then closes every session. When ctx expires first, the remaining commands are aborted.
// It returns after every goroutine of the server has ended.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.Close() // logins in progress
	}
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()

	for _, ss := range sessions {
		ss.requestLogout()
	}
	// Wait until the sessions are idle (or gone), then close them.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for _, ss := range sessions {
		for !ss.idle() {
			select {
			case <-ss.done:
				continue wait
			case <-ctx.Done():
				err = ctx.Err()
				break wait
			case <-tick.C:
			}
		}
	}
	for _, ss := range sessions {
		if err == nil {
			ss.closeAfterFlush(errors.New("server shutdown"))
		}
	}
	if err == nil {
		// Give the writers a moment to flush the logout requests, then force.
		for _, ss := range sessions {
			select {
			case <-ss.done:
			case <-time.After(time.Second):
			}
		}
	}
	for _, ss := range sessions {
		ss.close(errors.New("server shutdown"))
	}
	s.wg.Wait()
	return err
}

// register adds a new session, reinstating (closing) an older one with the same initiator name, ISID
// and target (RFC 7143 6.3.5). It assigns the TSIH.
func (s *Server) register(ss *session) (LoginStatus, error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return LoginServiceUnavail, errors.New("server shutting down")
	}
	var old *session
	for _, o := range s.sessions {
		if o.key == ss.key {
			old = o
			break
		}
	}
	if old == nil && len(s.sessions) >= s.cfg.MaxSessions {
		s.mu.Unlock()
		return LoginOutOfResources, fmt.Errorf("too many sessions (%d)", s.cfg.MaxSessions)
	}
	s.mu.Unlock()
	if old != nil {
		s.log.Info("iscsi session reinstatement", "initiator", ss.params.InitiatorName, "old_tsih", old.tsih)
		old.close(errors.New("session reinstated"))
		<-old.done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return LoginServiceUnavail, errors.New("server shutting down")
	}
	for {
		s.nextTSIH++
		if s.nextTSIH == 0 {
			continue
		}
		if _, used := s.sessions[s.nextTSIH]; !used {
			break
		}
	}
	ss.tsih = s.nextTSIH
	s.sessions[ss.tsih] = ss
	// The connection is the session's now: Shutdown asks it to log out rather than cutting it as a login
	// in progress (the final Login Response may still be on its way).
	delete(s.conns, ss.nc)
	return LoginSuccess, nil
}

func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	if s.sessions[ss.tsih] == ss {
		delete(s.sessions, ss.tsih)
	}
	s.mu.Unlock()
}

// sessionsOf returns the live normal sessions of target t.
func (s *Server) sessionsOf(t *targetEntry) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for _, ss := range s.sessions {
		if ss.tgt == t {
			out = append(out, ss)
		}
	}
	return out
}
