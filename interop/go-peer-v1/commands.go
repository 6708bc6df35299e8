package main

// stdin command parsing and dispatch: {"id": N, "cmd": "<name>", ...fields},
// exactly one {"type":"result","id":N,"ok":...} line per command.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	datatransfer "github.com/filecoin-project/go-data-transfer"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
	"github.com/ipld/go-ipld-prime/datamodel"
	selectorparse "github.com/ipld/go-ipld-prime/traversal/selector/parse"
	"github.com/libp2p/go-libp2p-core/peer"
	"github.com/libp2p/go-libp2p-core/peerstore"
	"github.com/multiformats/go-multiaddr"
)

type command struct {
	ID  int64  `json:"id"`
	Cmd string `json:"cmd"`

	Addr string `json:"addr"`
	Peer string `json:"peer"`

	Path      string          `json:"path"`
	ChunkSize int64           `json:"chunk_size"`
	RawLeaves *bool           `json:"raw_leaves"`
	CidVer    *int            `json:"cid_version"`
	MaxLinks  int             `json:"max_links"`
	Root      string          `json:"root"`
	Selector  json.RawMessage `json:"selector"`
	Cid       string          `json:"cid"`

	Chid    *chidJSON    `json:"chid"`
	Voucher *voucherJSON `json:"voucher"`

	BlockDelayMs int64 `json:"block_delay_ms"`

	raw json.RawMessage
}

func parseCommand(line []byte) (command, error) {
	var c command
	if err := json.Unmarshal(line, &c); err != nil {
		var idOnly struct {
			ID int64 `json:"id"`
		}
		_ = json.Unmarshal(line, &idOnly)
		return command{ID: idOnly.ID}, fmt.Errorf("bad command JSON: %w", err)
	}
	c.raw = append(json.RawMessage(nil), line...)
	return c, nil
}

func (n *node) dispatch(c command) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(n.ctx, 120*time.Second)
	defer cancel()

	switch c.Cmd {
	case "connect":
		return map[string]any{}, n.cmdConnect(ctx, c)
	case "disconnect":
		p, err := peer.Decode(c.Peer)
		if err != nil {
			return nil, err
		}
		return map[string]any{}, n.host.Network().ClosePeer(p)
	case "import":
		return n.cmdImport(ctx, c)
	case "export":
		return n.cmdExport(ctx, c)
	case "walk":
		root, err := cid.Decode(c.Root)
		if err != nil {
			return nil, fmt.Errorf("root: %w", err)
		}
		sel, err := parseSelector(c.Selector)
		if err != nil {
			return nil, err
		}
		cids, err := n.walk(ctx, root, sel)
		if err != nil {
			return nil, err
		}
		return map[string]any{"cids": cidStrings(cids)}, nil
	case "has":
		k, err := cid.Decode(c.Cid)
		if err != nil {
			return nil, err
		}
		has, err := n.bs.Has(ctx, k)
		return map[string]any{"has": has}, err
	case "delete_all":
		ch, err := n.bs.AllKeysChan(ctx)
		if err != nil {
			return nil, err
		}
		var keys []cid.Cid
		for k := range ch {
			keys = append(keys, k)
		}
		for _, k := range keys {
			if err := n.bs.DeleteBlock(ctx, k); err != nil {
				return nil, err
			}
		}
		return map[string]any{"deleted": len(keys)}, nil
	case "policy":
		p := defaultPolicy()
		if err := json.Unmarshal(c.raw, &p); err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		if err := n.policies.set(p); err != nil {
			return nil, err
		}
		return structToMap(p)
	case "pull", "push":
		return n.cmdOpen(c)
	case "send_voucher":
		chid, err := c.Chid.toChannelID()
		if err != nil {
			return nil, err
		}
		v, err := c.Voucher.toVoucher()
		if err != nil {
			return nil, err
		}
		return map[string]any{}, n.dt.SendVoucher(ctx, chid, v)
	case "pause", "resume", "close", "restart":
		chid, err := c.Chid.toChannelID()
		if err != nil {
			return nil, err
		}
		switch c.Cmd {
		case "pause":
			err = n.dt.PauseDataTransferChannel(ctx, chid)
		case "resume":
			err = n.dt.ResumeDataTransferChannel(ctx, chid)
		case "close":
			err = n.dt.CloseDataTransferChannel(ctx, chid)
		case "restart":
			// The restart context must outlive this command (a pull's new
			// graphsync request runs under it).
			err = n.dt.RestartDataTransferChannel(n.ctx, chid)
		}
		return map[string]any{}, err
	case "status":
		chid, err := c.Chid.toChannelID()
		if err != nil {
			return nil, err
		}
		st, err := n.dt.ChannelState(ctx, chid)
		if err != nil {
			return nil, err
		}
		return structToMap(toStateJSON(st))
	case "channels":
		chans, err := n.dt.InProgressChannels(ctx)
		if err != nil {
			return nil, err
		}
		states := make([]stateJSON, 0, len(chans))
		for _, st := range chans {
			states = append(states, toStateJSON(st))
		}
		sort.Slice(states, func(i, j int) bool {
			if states[i].Chid.Initiator != states[j].Chid.Initiator {
				return states[i].Chid.Initiator < states[j].Chid.Initiator
			}
			return states[i].Chid.ID < states[j].Chid.ID
		})
		return map[string]any{"channels": states}, nil
	case "throttle":
		if c.BlockDelayMs < 0 {
			return nil, errors.New("block_delay_ms must not be negative")
		}
		n.blockDelay.Store(c.BlockDelayMs)
		return map[string]any{"block_delay_ms": c.BlockDelayMs}, nil
	case "":
		return nil, errors.New(`missing "cmd"`)
	default:
		return nil, fmt.Errorf("unknown command %q (go-peer-v1 implements a subset of go-peer)", c.Cmd)
	}
}

func (n *node) cmdConnect(ctx context.Context, c command) error {
	ma, err := multiaddr.NewMultiaddr(c.Addr)
	if err != nil {
		return fmt.Errorf("addr: %w", err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(ma)
	if err != nil {
		return fmt.Errorf("addr: %w", err)
	}
	// Keep the address for good: data-transfer re-dials by peer id only.
	n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
	return n.host.Connect(ctx, *ai)
}

func (n *node) cmdOpen(c command) (map[string]any, error) {
	to, err := peer.Decode(c.Peer)
	if err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	root, err := cid.Decode(c.Root)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	sel, err := parseSelector(c.Selector)
	if err != nil {
		return nil, err
	}
	v := &InteropVoucher{}
	if c.Voucher != nil {
		if v, err = c.Voucher.toVoucher(); err != nil {
			return nil, err
		}
	}
	var chid datatransfer.ChannelID
	if c.Cmd == "pull" {
		chid, err = n.dt.OpenPullDataChannel(n.ctx, to, v, root, sel)
	} else {
		chid, err = n.dt.OpenPushDataChannel(n.ctx, to, v, root, sel)
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"chid": toChidJSON(chid)}, nil
}

// parseSelector decodes a DAG-JSON selector; null/absent = explore-all recursive.
func parseSelector(raw json.RawMessage) (datamodel.Node, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return selectorparse.CommonSelector_ExploreAllRecursively, nil
	}
	nd, err := decodeNode(strings.NewReader(s), dagjson.Decode)
	if err != nil {
		return nil, fmt.Errorf("selector (dag-json): %w", err)
	}
	return nd, nil
}

func cidStrings(cs []cid.Cid) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

func structToMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}
