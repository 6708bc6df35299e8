package main

// `go-retrieval provide`: a free ("unpaid") graphsync retrieval provider on
// go-data-transfer v2 + go-graphsync + libp2p (TCP, noise, yamux), serving
// one file imported as UnixFS from an in-memory blockstore. It behaves like
// Boost's unpaid retrieval path towards a lassie client (see validator.go for
// the decisions and README.md for the wire-level story).

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	datatransfer "github.com/filecoin-project/go-data-transfer/v2"
	dtimpl "github.com/filecoin-project/go-data-transfer/v2/impl"
	dtnet "github.com/filecoin-project/go-data-transfer/v2/network"
	gstransport "github.com/filecoin-project/go-data-transfer/v2/transport/graphsync"
	retrievaltypes "github.com/filecoin-project/go-retrieval-types"
	"github.com/filecoin-project/go-state-types/big"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	dssync "github.com/ipfs/go-datastore/sync"
	gsimpl "github.com/ipfs/go-graphsync/impl"
	gsnet "github.com/ipfs/go-graphsync/network"
	"github.com/ipfs/go-graphsync/storeutil"
	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/rust-data-transfer/rust-data-transfer/interop/gopeerkit"

	// codecs the link system must know (UnixFS dag-pb, raw leaves)
	_ "github.com/ipld/go-codec-dagpb"
	_ "github.com/ipld/go-ipld-prime/codec/raw"
)

var log = logging.Logger("go-retrieval")

// provider is a running retrieval provider.
type provider struct {
	ctx    context.Context
	cancel context.CancelFunc

	host host.Host
	bs   blockstore.Blockstore
	dt   datatransfer.Manager
	out  *gopeerkit.Writer

	// behaviour flags
	rejectMsg   string   // --reject: reject every proposal with this message
	fundsNeeded *big.Int // --funds-needed: accept paused, asking for this payment
	noComplete  bool     // --no-complete: never send the final Complete

	// channels already sent (or being sent) their final Complete
	completedMu sync.Mutex
	completed   map[datatransfer.ChannelID]bool

	stopOnce sync.Once
}

// ---- stdout lines ----

// readyLine is printed once the provider serves.
type readyLine struct {
	Listening string `json:"listening"`
	Peer      string `json:"peer"`
	Root      string `json:"root"`
}

// eventLine is printed for every data-transfer event.
type eventLine struct {
	Event   string `json:"event"`
	Status  string `json:"status"`
	Channel string `json:"channel"`
	Message string `json:"message"`
	// extras: bytes sent on the channel so far, and on NewVoucherResult
	// events the Status of the RetrievalDealResponse/1 just recorded
	Sent       uint64  `json:"sent"`
	DealStatus *uint64 `json:"deal_status,omitempty"`
}

// validatedLine is printed for every validation decision.
type validatedLine struct {
	Validated  bool   `json:"validated"`
	Accepted   bool   `json:"accepted"`
	Message    string `json:"message"`
	Kind       string `json:"kind"` // pull, push, restart
	Channel    string `json:"channel"`
	DealID     uint64 `json:"deal_id"`
	DealStatus uint64 `json:"deal_status"` // status of the voucher result sent
}

// completionLine reports the final Complete message (with the
// RetrievalDealResponse/1 Status 15 result): "sent", "error", or "withheld"
// (--no-complete).
type completionLine struct {
	Completion string `json:"completion"`
	Channel    string `json:"channel"`
	DealID     uint64 `json:"deal_id"`
	Message    string `json:"message"`
}

// ---- startup ----

func runProvide(args []string) int {
	fs := flag.NewFlagSet("provide", flag.ContinueOnError)
	keyHex := fs.String("key", "", "64 hex chars: 32-byte ed25519 seed (required)")
	listen := fs.String("listen", "/ip4/127.0.0.1/tcp/0", "libp2p listen multiaddr (TCP only)")
	file := fs.String("file", "", "file to import as UnixFS and serve (required)")
	reject := fs.String("reject", "", "reject every proposal with this message")
	funds := fs.String("funds-needed", "", "accept but pause, asking for this payment (decimal attoFIL)")
	noComplete := fs.Bool("no-complete", false, "never send the final Complete message")
	logLevel := fs.String("log-level", "", "go-log level for all subsystems (default: GOLOG_LOG_LEVEL or error)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "provide: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *keyHex == "" || *file == "" {
		fmt.Fprintln(os.Stderr, "provide: --key and --file are required")
		return 2
	}
	if *logLevel != "" {
		lvl, err := logging.LevelFromString(*logLevel)
		if err != nil {
			fmt.Fprintln(os.Stderr, "provide: --log-level:", err)
			return 2
		}
		logging.SetAllLoggers(lvl)
	}

	p := &provider{
		rejectMsg:  *reject,
		noComplete: *noComplete,
		completed:  make(map[datatransfer.ChannelID]bool),
	}
	if *funds != "" {
		n, err := big.FromString(*funds)
		if err != nil {
			fmt.Fprintln(os.Stderr, "provide: --funds-needed:", err)
			return 2
		}
		p.fundsNeeded = &n
	}

	ready, err := p.start(*keyHex, *listen, *file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "provide:", err)
		p.stop()
		return 1
	}
	p.out.Emit(ready)

	// Serve until stdin reaches EOF or SIGINT/SIGTERM.
	done := make(chan string, 2)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		done <- "stdin closed"
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() { done <- (<-sigs).String() }()
	why := <-done
	log.Infof("shutting down: %s", why)
	p.stop()
	return 0
}

func (p *provider) start(keyHex, listen, file string) (readyLine, error) {
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.out = gopeerkit.NewWriter(os.Stdout)

	priv, err := privKeyFromSeed(keyHex)
	if err != nil {
		return readyLine{}, err
	}

	// Everything in memory: blocks under /blocks (boxo adds the prefix),
	// data-transfer state under /datatransfer.
	ds := dssync.MutexWrap(datastore.NewMapDatastore())
	p.bs = blockstore.NewBlockstore(ds)
	dag := merkledag.NewDAGService(blockservice.New(p.bs, offline.Exchange(p.bs)))

	root, size, nblocks, err := importUnixFS(p.ctx, dag, file)
	if err != nil {
		return readyLine{}, fmt.Errorf("import %s: %w", file, err)
	}
	log.Infof("imported %s: root %s, %d bytes, %d blocks", file, root, size, nblocks)

	p.host, err = libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(listen),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		return readyLine{}, fmt.Errorf("libp2p: %w", err)
	}

	// graphsync serves only requests a hook validates (go-data-transfer's
	// transport validates its own); bare graphsync requests are refused.
	// The link system reads the blockstore and knows UnixFS (ADL reification).
	lsys := storeutil.LinkSystemForBlockstore(p.bs)
	gs := gsimpl.New(p.ctx, gsnet.NewFromLibp2pHost(p.host), lsys, gsimpl.RejectAllRequestsByDefault())

	tp := gstransport.NewTransport(p.host.ID(), gs)
	dtNet := dtnet.NewFromLibp2pHost(p.host, dtnet.RetryParameters(time.Second, 10*time.Second, 5, 2))
	p.dt, err = dtimpl.NewDataTransfer(namespace.Wrap(ds, datastore.NewKey("datatransfer")), dtNet, tp)
	if err != nil {
		return readyLine{}, fmt.Errorf("data transfer: %w", err)
	}
	v := &validator{p: p}
	for _, typ := range []datatransfer.TypeIdentifier{retrievaltypes.DealProposalType, retrievaltypes.DealPaymentType} {
		if err := p.dt.RegisterVoucherType(typ, v); err != nil {
			return readyLine{}, fmt.Errorf("register %s: %w", typ, err)
		}
	}
	p.dt.SubscribeToEvents(p.onEvent)

	readyCh := make(chan error, 1)
	p.dt.OnReady(func(err error) { readyCh <- err })
	if err := p.dt.Start(p.ctx); err != nil {
		return readyLine{}, fmt.Errorf("data transfer start: %w", err)
	}
	select {
	case err := <-readyCh:
		if err != nil {
			return readyLine{}, fmt.Errorf("data transfer ready: %w", err)
		}
	case <-time.After(30 * time.Second):
		return readyLine{}, errors.New("data transfer not ready after 30s")
	}

	addrs := p.host.Addrs()
	if len(addrs) == 0 {
		return readyLine{}, errors.New("host has no listen address")
	}
	id := p.host.ID().String()
	return readyLine{Listening: addrs[0].String() + "/p2p/" + id, Peer: id, Root: root.String()}, nil
}

func (p *provider) stop() {
	p.stopOnce.Do(func() {
		if p.dt != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := p.dt.Stop(ctx); err != nil {
				log.Warnf("data transfer stop: %s", err)
			}
			cancel()
			log.Debug("data transfer stopped")
		}
		if p.cancel != nil {
			p.cancel() // stops graphsync
		}
		if p.host != nil {
			if err := p.host.Close(); err != nil {
				log.Warnf("host close: %s", err)
			}
			log.Debug("host closed")
		}
		if p.out != nil {
			p.out.Close() // flush stdout
		}
	})
}

// privKeyFromSeed turns the 32-byte hex seed into a libp2p ed25519 key (same
// derivation as interop/go-peer, so Rust derives the same PeerId).
func privKeyFromSeed(keyHex string) (crypto.PrivKey, error) {
	seed, err := hex.DecodeString(keyHex)
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("--key: want %d bytes, got %d", ed25519.SeedSize, len(seed))
	}
	return crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed))
}

// ---- events and completion ----

// onEvent runs on go-data-transfer's notifier goroutine: it only queues
// output and starts goroutines, it never blocks.
func (p *provider) onEvent(ev datatransfer.Event, st datatransfer.ChannelState) {
	line := eventLine{
		Event:   datatransfer.Events[ev.Code],
		Status:  datatransfer.Statuses[st.Status()],
		Channel: st.ChannelID().String(),
		Message: ev.Message,
		Sent:    st.Sent(),
	}
	if ev.Code == datatransfer.NewVoucherResult {
		if rs := st.VoucherResults(); len(rs) > 0 && rs[len(rs)-1].Type == retrievaltypes.DealResponseType {
			if r, err := retrievaltypes.DealResponseFromNode(rs[len(rs)-1].Voucher); err == nil {
				s := uint64(r.Status)
				line.DealStatus = &s
			}
		}
	}
	p.out.Emit(line)

	// All data was sent and go-data-transfer, because the validator asked for
	// finalization, sent Complete (paused) and moved the channel to
	// Finalizing: finish the deal with the Completed result.
	if ev.Code == datatransfer.BeginFinalizing && st.ChannelID().Responder == p.host.ID() {
		chid := st.ChannelID()
		dealID := proposalIDOf(st)
		if p.noComplete {
			p.out.Emit(completionLine{Completion: "withheld", Channel: chid.String(), DealID: dealID})
			return
		}
		p.completedMu.Lock()
		already := p.completed[chid]
		p.completed[chid] = true
		p.completedMu.Unlock()
		if !already {
			go p.complete(chid, dealID)
		}
	}
}

// complete ends the deal the way a Boost provider does: a data-transfer
// Complete message (type 3, accepted, not paused) whose voucher result is
// RetrievalDealResponse/1 {Status: DealStatusCompleted (15), ID}.
//
// With go-data-transfer v2 this is UpdateValidationStatus on a channel in
// Finalizing: the manager builds ValidationResultResponse(CompleteMessage,
// ...) with our voucher result and Paus=false, sends it on a data-transfer
// stream, records NewVoucherResult and SetRequiresFinalization(false), and
// the channel completes on both sides.
func (p *provider) complete(chid datatransfer.ChannelID, dealID uint64) {
	result := (&retrievaltypes.DealResponse{
		Status: retrievaltypes.DealStatusCompleted,
		ID:     retrievaltypes.DealID(dealID),
	}).AsVoucher()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	err := p.dt.UpdateValidationStatus(ctx, chid, datatransfer.ValidationResult{
		Accepted:             true,
		VoucherResult:        &result,
		RequiresFinalization: false,
		DataLimit:            0,
	})
	line := completionLine{Completion: "sent", Channel: chid.String(), DealID: dealID}
	if err != nil {
		line.Completion = "error"
		line.Message = err.Error()
	}
	p.out.Emit(line)
}

// proposalIDOf returns the deal ID of the channel's opening voucher (0 when
// it is not a decodable DealProposal).
func proposalIDOf(st datatransfer.ChannelState) uint64 {
	v := st.Voucher()
	if v.Type != retrievaltypes.DealProposalType || v.Voucher == nil {
		return 0
	}
	prop, err := retrievaltypes.DealProposalFromNode(v.Voucher)
	if err != nil {
		return 0
	}
	return uint64(prop.ID)
}
