// Command go-peer-v1 is the go-data-transfer v1 interop test peer of
// rust-data-transfer.
//
// It runs a real go-data-transfer v1.15.2 node (the Lotus markets era) over
// go-graphsync v0.13.1 and a TCP+noise+yamux libp2p host assembled from the
// go-libp2p v0.19-era sub-modules (swarm, basic host, tcp transport, noise,
// yamux, transport upgrader) without the root `libp2p` package, so that no
// QUIC (and no old quic-go) is compiled in.
//
// It speaks the same JSON-lines protocol as ../go-peer (a subset of it): one
// command object per stdin line, one JSON object per stdout line. Logs go to
// stderr only. See README.md.
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	datatransfer "github.com/filecoin-project/go-data-transfer"
	"github.com/filecoin-project/go-data-transfer/channelmonitor"
	dtimpl "github.com/filecoin-project/go-data-transfer/impl"
	dtnet "github.com/filecoin-project/go-data-transfer/network"
	gstransport "github.com/filecoin-project/go-data-transfer/transport/graphsync"
	"github.com/ipfs/go-blockservice"
	"github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/ipfs/go-graphsync"
	gsimpl "github.com/ipfs/go-graphsync/impl"
	gsnet "github.com/ipfs/go-graphsync/network"
	"github.com/ipfs/go-graphsync/storeutil"
	blockstore "github.com/ipfs/go-ipfs-blockstore"
	offline "github.com/ipfs/go-ipfs-exchange-offline"
	ipldformat "github.com/ipfs/go-ipld-format"
	logging "github.com/ipfs/go-log/v2"
	"github.com/ipfs/go-merkledag"
	"github.com/ipld/go-ipld-prime"
	"github.com/libp2p/go-libp2p-core/crypto"
	"github.com/libp2p/go-libp2p-core/host"

	// Codecs the link system must know about (UnixFS, raw leaves, vouchers).
	_ "github.com/ipld/go-codec-dagpb"
	_ "github.com/ipld/go-ipld-prime/codec/dagcbor"
	_ "github.com/ipld/go-ipld-prime/codec/dagjson"
	_ "github.com/ipld/go-ipld-prime/codec/raw"
)

var log = logging.Logger("go-peer-v1")

// restartConfig is the channel monitor configuration used with
// --restart-config (same values as go-peer's).
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

	host host.Host
	ds   datastore.Batching
	bs   blockstore.Blockstore
	dag  ipldformat.DAGService
	lsys ipld.LinkSystem
	gs   graphsync.GraphExchange
	dt   datatransfer.Manager

	out *gopeerkit.Writer

	traceBlocks bool
	blockIdx    blockCounter
	// blockDelay (ms): graphsync's responder sleeps this long in the outgoing
	// block hook before each block it sends (command throttle).
	blockDelay atomic.Int64

	policies *policyTable
	pay      *payments
	worker   *serialWorker

	shutdownOnce sync.Once
}

func main() {
	keyHex := flag.String("key", "", "64 hex chars: 32-byte ed25519 seed (required)")
	listen := flag.String("listen", "/ip4/127.0.0.1/tcp/0", "libp2p listen multiaddr (TCP only)")
	dataDir := flag.String("data-dir", "", "scratch directory (accepted for go-peer compatibility; state is in memory)")
	restartCfg := flag.Bool("restart-config", false, "enable go-data-transfer's channel monitor (ChannelRestartConfig)")
	traceBlocks := flag.Bool("trace-blocks", false, "print a gs_block line for every graphsync block sent or received")
	traceStreams := flag.Bool("trace-streams", false, "print a stream line for every libp2p stream opened or accepted (with its negotiated protocol)")
	logLevel := flag.String("log-level", "", "go-log level for all subsystems (e.g. debug, info); default: GOLOG_LOG_LEVEL or error")
	flag.Parse()

	if *logLevel != "" {
		lvl, err := logging.LevelFromString(*logLevel)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad --log-level:", err)
			os.Exit(2)
		}
		logging.SetAllLoggers(lvl)
	}
	if *dataDir != "" {
		if err := os.MkdirAll(*dataDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "go-peer-v1: --data-dir:", err)
			os.Exit(1)
		}
	}

	n, err := startNode(*keyHex, *listen, *restartCfg, *traceBlocks, *traceStreams)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-peer-v1: start:", err)
		os.Exit(1)
	}

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
	n.shutdown()
	n.out.Close()
}

// privKeyFromSeed turns the 32-byte hex seed into a libp2p ed25519 key (the
// same derivation as go-peer, so the same seed gives the same PeerId).
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

func startNode(keyHex, listen string, restartCfg, traceBlocks, traceStreams bool) (*node, error) {
	priv, err := privKeyFromSeed(keyHex)
	if err != nil {
		return nil, err
	}
	n := &node{
		out:         gopeerkit.NewWriter(os.Stdout),
		traceBlocks: traceBlocks,
		blockIdx:    blockCounter{m: make(map[string]int64)},
		policies:    newPolicyTable(),
		pay:         newPayments(),
		worker:      newSerialWorker(),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())

	n.ds = dssync.MutexWrap(datastore.NewMapDatastore())
	// go-ipfs-blockstore puts blocks under the "/blocks" namespace itself.
	n.bs = blockstore.NewBlockstore(n.ds)
	n.dag = merkledag.NewDAGService(blockservice.New(n.bs, offline.Exchange(n.bs)))
	n.lsys = storeutil.LinkSystemForBlockstore(n.bs)

	h, err := newHost(priv, listen)
	if err != nil {
		return nil, fmt.Errorf("libp2p: %w", err)
	}
	n.host = h
	if traceStreams {
		n.host = &tracingHost{Host: h, out: n.out}
	}

	// Bare graphsync requests (no data-transfer extension) are rejected, as in go-peer.
	n.gs = gsimpl.New(n.ctx, gsnet.NewFromLibp2pHost(n.host), n.lsys, gsimpl.RejectAllRequestsByDefault())
	n.registerBlockHooks()
	n.watchDuplicateResults() // before go-data-transfer registers its hooks

	tp := gstransport.NewTransport(n.host.ID(), n.gs)
	// Stream-open retries: 5 attempts, 1s, 2s, 4s, 8s apart (as go-peer).
	net := dtnet.NewFromLibp2pHost(n.host, dtnet.RetryParameters(time.Second, 10*time.Second, 5, 2))
	var opts []dtimpl.DataTransferOption
	if restartCfg {
		opts = append(opts, dtimpl.ChannelRestartConfig(restartConfig))
	}
	n.dt, err = dtimpl.NewDataTransfer(namespace.Wrap(n.ds, datastore.NewKey("datatransfer")), net, tp, opts...)
	if err != nil {
		return nil, fmt.Errorf("data transfer: %w", err)
	}
	n.dt.SubscribeToEvents(n.onEvent)

	// v1 voucher types are Go types: the voucher, its result type and the
	// revalidator (payments) are registered once, before Start.
	if err := n.registerTypes(); err != nil {
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

// ---- graphsync block tracing ----

// blockCounter numbers the blocks the hooks see per (direction, request):
// graphsync v0.13's BlockData has no Index(), so `index` is our own 1-based
// count of hook calls (skipped blocks included on the sending side).
type blockCounter struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *blockCounter) next(key string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[key]++
	return c.m[key]
}

// registerBlockHooks adds --trace-blocks lines and the throttle delay.
func (n *node) registerBlockHooks() {
	if n.traceBlocks {
		n.gs.RegisterIncomingBlockHook(func(p peerID, resp graphsync.ResponseData, blk graphsync.BlockData, ha graphsync.IncomingBlockHookActions) {
			idx := n.blockIdx.next("in/" + resp.RequestID().String())
			n.out.Emit(gsBlockLine("in", p, resp.RequestID(), blk, idx))
		})
	}
	n.gs.RegisterOutgoingBlockHook(func(p peerID, req graphsync.RequestData, blk graphsync.BlockData, ha graphsync.OutgoingBlockHookActions) {
		var idx int64
		if n.traceBlocks {
			idx = n.blockIdx.next("out/" + req.ID().String())
		}
		if blk.BlockSizeOnWire() == 0 {
			return // skipped (do-not-send-first-blocks / duplicate): not sent
		}
		if d := n.blockDelay.Load(); d > 0 {
			time.Sleep(time.Duration(d) * time.Millisecond)
		}
		if n.traceBlocks {
			n.out.Emit(gsBlockLine("out", p, req.ID(), blk, idx))
		}
	})
}

func gsBlockLine(dir string, p peerID, rid graphsync.RequestID, blk graphsync.BlockData, idx int64) map[string]any {
	return map[string]any{
		"type":    "gs_block",
		"dir":     dir,
		"peer":    p.String(),
		"request": rid.String(),
		"cid":     blk.Link().String(),
		"size":    blk.BlockSize(),
		"on_wire": blk.BlockSizeOnWire(),
		"index":   idx,
	}
}

// ---- stdin loop ----

// shutdown stops data transfer, graphsync and the host. Safe to call twice.
func (n *node) shutdown() {
	n.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.dt.Stop(ctx); err != nil {
			log.Warnf("data transfer stop: %s", err)
		}
		n.cancel()
		if err := n.host.Close(); err != nil {
			log.Warnf("host close: %s", err)
		}
	})
}
