// Command go-peer is the Go interop test peer of rust-data-transfer.
//
// It runs a real go-data-transfer v2 node (over go-graphsync and a
// TCP + TLS or noise + yamux libp2p host) and is driven by the Rust test suite over
// stdin/stdout JSON lines: one command object per stdin line, one JSON
// object per stdout line (results, data-transfer events, payment notes,
// optional graphsync block traces). Logs go to stderr only.
//
// `go-peer vectors` instead prints the exact bytes Go encodes for a fixed
// set of data-transfer and graphsync messages (see vectors.go).
//
// See README.md for the full protocol.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"github.com/rust-data-transfer/rust-data-transfer/interop/gopeerkit"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	datatransfer "github.com/filecoin-project/go-data-transfer/v2"
	"github.com/filecoin-project/go-data-transfer/v2/channelmonitor"
	dtimpl "github.com/filecoin-project/go-data-transfer/v2/impl"
	dtnet "github.com/filecoin-project/go-data-transfer/v2/network"
	gstransport "github.com/filecoin-project/go-data-transfer/v2/transport/graphsync"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	dssync "github.com/ipfs/go-datastore/sync"
	leveldb "github.com/ipfs/go-ds-leveldb"
	"github.com/ipfs/go-graphsync"
	gsimpl "github.com/ipfs/go-graphsync/impl"
	gsnet "github.com/ipfs/go-graphsync/network"
	"github.com/ipfs/go-graphsync/storeutil"
	ipldformat "github.com/ipfs/go-ipld-format"
	logging "github.com/ipfs/go-log/v2"
	"github.com/ipld/go-ipld-prime"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	tls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	// Codecs the link system must know about (UnixFS, raw leaves, vouchers).
	_ "github.com/ipld/go-codec-dagpb"
	_ "github.com/ipld/go-ipld-prime/codec/dagcbor"
	_ "github.com/ipld/go-ipld-prime/codec/dagjson"
	_ "github.com/ipld/go-ipld-prime/codec/raw"
)

var log = logging.Logger("go-peer")

// restartConfig is the channel monitor configuration used with
// --restart-config. The intervals are short so that tests notice stalls
// quickly, but long enough not to fire during a normal 20 MiB local transfer:
//   - AcceptTimeout 10s: an initiator fails the channel if the responder does
//     not accept within 10 s.
//   - RestartDebounce 500ms: several transport errors in a burst cause one restart.
//   - RestartBackoff 1s: wait at least 1 s between restart attempts.
//   - MaxConsecutiveRestarts 10: fail after 10 restarts without any data moving.
//   - CompleteTimeout 30s: an initiator that has all the data fails the channel
//     if the responder's Complete message does not arrive within 30 s (keep
//     finalization/payment round trips shorter than that).
var restartConfig = channelmonitor.Config{
	AcceptTimeout:          10 * time.Second,
	RestartDebounce:        500 * time.Millisecond,
	RestartBackoff:         time.Second,
	MaxConsecutiveRestarts: 10,
	CompleteTimeout:        30 * time.Second,
}

// node bundles everything a running peer owns.
type node struct {
	ctx    context.Context
	cancel context.CancelFunc

	host  host.Host
	rootD datastore.Batching
	close func() error // closes the persistent datastore, if any
	bs    blockstore.Blockstore
	dag   ipldformat.DAGService
	lsys  ipld.LinkSystem
	gs    graphsync.GraphExchange
	dt    datatransfer.Manager

	out *gopeerkit.Writer

	traceBlocks bool
	gsAcceptAll atomic.Bool
	// blockDelay (ms) holds graphsync's responder in the outgoing block hook before
	// each block it sends (command throttle): a slow Go sender, so that tests can
	// act mid-transfer without megabytes already in flight in socket buffers.
	blockDelay atomic.Int64

	pay      *payments
	worker   *serialWorker
	policies *policyTable

	// gsPulls routes incoming blocks of bare graphsync requests (gs_pull) to
	// their collectors, keyed by request id.
	gsPullsMu sync.Mutex
	gsPulls   map[graphsync.RequestID]*gsCollector

	shutdownOnce sync.Once
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "vectors" {
		if err := printVectors(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "vectors:", err)
			os.Exit(1)
		}
		return
	}

	keyHex := flag.String("key", "", "64 hex chars: 32-byte ed25519 seed (required)")
	listen := flag.String("listen", "/ip4/127.0.0.1/tcp/0", "libp2p listen multiaddr (TCP only)")
	dataDir := flag.String("data-dir", "", "directory for persistent state (used with --persist)")
	persist := flag.Bool("persist", false, "keep blocks and data-transfer state in a leveldb datastore in --data-dir")
	restartCfg := flag.Bool("restart-config", false, "enable go-data-transfer's channel monitor (ChannelRestartConfig)")
	traceBlocks := flag.Bool("trace-blocks", false, "print a gs_block line for every graphsync block sent or received")
	logLevel := flag.String("log-level", "", "go-log level for all subsystems (e.g. debug, info); default: GOLOG_LOG_LEVEL or error")
	flag.Parse()

	if *logLevel != "" {
		logging.SetAllLoggers(mustLevel(*logLevel))
	}

	n, err := startNode(*keyHex, *listen, *dataDir, *persist, *restartCfg, *traceBlocks)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-peer: start:", err)
		os.Exit(1)
	}

	// SIGINT/SIGTERM behave like the shutdown command (SIGKILL cannot be caught,
	// which is the point of the persistence tests).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		n.shutdown()
		n.out.Close()
		os.Exit(0)
	}()

	gopeerkit.Serve(os.Stdin, n.out, func(line []byte) (gopeerkit.Parsed, error) {
		cmd, err := parseCommand(line)
		run := func() (map[string]any, error) { return n.dispatch(cmd) }
		return gopeerkit.Parsed{ID: cmd.ID, Name: cmd.Cmd, Run: run}, err
	}, n.shutdown, func() { os.Exit(0) })
	// EOF on stdin: shut down like the shutdown command (without a result).
	n.shutdown()
	n.out.Close()
}

func mustLevel(s string) logging.LogLevel {
	l, err := logging.LevelFromString(s)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad --log-level:", err)
		os.Exit(2)
	}
	return l
}

// privKeyFromSeed turns the 32-byte hex seed into a libp2p ed25519 key; the
// Rust side derives the same PeerId from the same seed.
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

// newHost builds a libp2p host restricted to TCP + yamux with go-libp2p's
// default secure channels in its default order (TLS, then noise), and no QUIC,
// websocket or relay, no resource limits and no metrics. The v1 peer and the
// retrieval provider speak noise only, so both channels meet Go in the suite.
func newHost(priv crypto.PrivKey, listen string) (host.Host, error) {
	return libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(listen),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(tls.ID, tls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.DisableMetrics(),
	)
}

func startNode(keyHex, listen, dataDir string, persist, restartCfg, traceBlocks bool) (*node, error) {
	priv, err := privKeyFromSeed(keyHex)
	if err != nil {
		return nil, err
	}

	n := &node{
		out:         gopeerkit.NewWriter(os.Stdout),
		traceBlocks: traceBlocks,
		pay:         newPayments(),
		worker:      newSerialWorker(),
		policies:    newPolicyTable(),
		gsPulls:     make(map[graphsync.RequestID]*gsCollector),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())

	// Datastore: in memory, or leveldb (synchronous writes) in --data-dir.
	if persist {
		if dataDir == "" {
			return nil, errors.New("--persist needs --data-dir")
		}
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return nil, err
		}
		ldb, err := leveldb.NewDatastore(filepath.Join(dataDir, "leveldb"), nil)
		if err != nil {
			return nil, fmt.Errorf("open leveldb: %w", err)
		}
		n.rootD = ldb
		n.close = ldb.Close
	} else {
		n.rootD = dssync.MutexWrap(datastore.NewMapDatastore())
		n.close = func() error { return nil }
	}
	// boxo's NewBlockstore puts blocks under the "/blocks" namespace itself.
	n.bs = blockstore.NewBlockstore(n.rootD)
	n.dag = merkledag.NewDAGService(blockservice.New(n.bs, offline.Exchange(n.bs)))
	n.lsys = storeutil.LinkSystemForBlockstore(n.bs)

	n.host, err = newHost(priv, listen)
	if err != nil {
		return nil, fmt.Errorf("libp2p: %w", err)
	}

	// graphsync: requests that no hook validates are rejected (instead of
	// graphsync's default selector-depth validator), so bare graphsync
	// requests are only served after `gs_policy {"accept_all":true}`.
	n.gs = gsimpl.New(n.ctx, gsnet.NewFromLibp2pHost(n.host), n.lsys, gsimpl.RejectAllRequestsByDefault())
	n.registerGraphsyncHooks()

	tp := gstransport.NewTransport(n.host.ID(), n.gs)
	// Stream-open retries: 5 attempts, 1s, 2s, 4s, 8s apart (go-data-transfer's
	// default backs off 1s..5min with factor 5, too slow for tests).
	net := dtnet.NewFromLibp2pHost(n.host, dtnet.RetryParameters(time.Second, 10*time.Second, 5, 2))
	var opts []dtimpl.DataTransferOption
	if restartCfg {
		opts = append(opts, dtimpl.ChannelRestartConfig(restartConfig))
	}
	n.dt, err = dtimpl.NewDataTransfer(namespace.Wrap(n.rootD, datastore.NewKey("datatransfer")), net, tp, opts...)
	if err != nil {
		return nil, fmt.Errorf("data transfer: %w", err)
	}
	n.dt.SubscribeToEvents(n.onEvent)

	// Register the default voucher type before Start (which installs the
	// network and graphsync handlers): after a restart with --persist, a
	// restart request for a stored channel must find a validator
	// (go-data-transfer panics on an unregistered voucher type there).
	if err := n.applyPolicy(defaultPolicy()); err != nil {
		return nil, err
	}

	ready := make(chan error, 1)
	n.dt.OnReady(func(err error) { ready <- err })
	if err := n.dt.Start(n.ctx); err != nil {
		return nil, fmt.Errorf("data transfer start: %w", err)
	}
	select {
	case err := <-ready:
		if err != nil {
			return nil, fmt.Errorf("data transfer ready: %w", err)
		}
	case <-time.After(60 * time.Second):
		return nil, errors.New("data transfer did not become ready in 60s")
	}

	addrs := make([]string, 0)
	for _, a := range n.host.Addrs() {
		addrs = append(addrs, a.String())
	}
	n.out.Emit(struct {
		Type   string   `json:"type"`
		PeerID string   `json:"peer_id"`
		Addrs  []string `json:"addrs"`
	}{"ready", n.host.ID().String(), addrs})
	log.Infof("ready: %s %v", n.host.ID(), addrs)
	return n, nil
}

// registerGraphsyncHooks adds the hooks this harness needs on top of the ones
// go-data-transfer registers itself.
func (n *node) registerGraphsyncHooks() {
	// gs_policy accept_all: validate bare graphsync requests (no data-transfer
	// extension). Requests carrying the extension are left to go-data-transfer.
	n.gs.RegisterIncomingRequestHook(func(p peerID, req graphsync.RequestData, ha graphsync.IncomingRequestHookActions) {
		if !n.gsAcceptAll.Load() || hasDTExtension(req) {
			return
		}
		ha.ValidateRequest()
	})

	// Blocks of our own bare requests (gs_pull) + optional tracing.
	n.gs.RegisterIncomingBlockHook(func(p peerID, resp graphsync.ResponseData, blk graphsync.BlockData, ha graphsync.IncomingBlockHookActions) {
		n.gsPullsMu.Lock()
		col := n.gsPulls[resp.RequestID()]
		n.gsPullsMu.Unlock()
		if col != nil {
			col.add(blk)
		}
		if n.traceBlocks {
			n.out.Emit(gsBlockLine("in", p, resp.RequestID(), blk))
		}
	})
	n.gs.RegisterOutgoingBlockHook(func(p peerID, req graphsync.RequestData, blk graphsync.BlockData, ha graphsync.OutgoingBlockHookActions) {
		if blk.BlockSizeOnWire() == 0 {
			return // skipped (do-not-send-first-blocks / duplicate): not sent
		}
		if d := n.blockDelay.Load(); d > 0 {
			time.Sleep(time.Duration(d) * time.Millisecond)
		}
		if n.traceBlocks {
			n.out.Emit(gsBlockLine("out", p, req.ID(), blk))
		}
	})
}

func gsBlockLine(dir string, p peerID, rid graphsync.RequestID, blk graphsync.BlockData) map[string]any {
	return map[string]any{
		"type":    "gs_block",
		"dir":     dir,
		"peer":    p.String(),
		"request": rid.String(),
		"cid":     blk.Link().String(),
		"size":    blk.BlockSize(),
		"on_wire": blk.BlockSizeOnWire(),
		"index":   blk.Index(),
	}
}

// shutdown stops data transfer, graphsync and the host and closes the
// datastore. Safe to call more than once.
func (n *node) shutdown() {
	n.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.dt.Stop(ctx); err != nil {
			log.Warnf("data transfer stop: %s", err)
		}
		n.cancel() // stops graphsync (its context)
		if err := n.host.Close(); err != nil {
			log.Warnf("host close: %s", err)
		}
		if err := n.close(); err != nil {
			log.Warnf("datastore close: %s", err)
		}
	})
}
