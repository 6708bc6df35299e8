package main

// The libp2p host, assembled by hand from go-libp2p v0.19-era sub-modules
// (what go-libp2p v0.19's config.NewNode does for TCP + noise + yamux),
// without importing the root github.com/libp2p/go-libp2p package: that
// package pulls in the QUIC transport and with it an old quic-go.

import (
	"context"
	"github.com/rust-data-transfer/rust-data-transfer/interop/gopeerkit"

	csms "github.com/libp2p/go-conn-security-multistream"
	"github.com/libp2p/go-libp2p-core/crypto"
	"github.com/libp2p/go-libp2p-core/host"
	"github.com/libp2p/go-libp2p-core/network"
	"github.com/libp2p/go-libp2p-core/peer"
	"github.com/libp2p/go-libp2p-core/protocol"
	noise "github.com/libp2p/go-libp2p-noise"
	"github.com/libp2p/go-libp2p-peerstore/pstoremem"
	swarm "github.com/libp2p/go-libp2p-swarm"
	tptu "github.com/libp2p/go-libp2p-transport-upgrader"
	yamux "github.com/libp2p/go-libp2p-yamux"
	bhost "github.com/libp2p/go-libp2p/p2p/host/basic"
	msmux "github.com/libp2p/go-stream-muxer-multistream"
	tcp "github.com/libp2p/go-tcp-transport"
	ma "github.com/multiformats/go-multiaddr"
)

const yamuxID = "/yamux/1.0.0"

// newHost builds swarm + basic host (identify, ping) with a TCP transport
// upgraded by noise and yamux; no resource limits (NullResourceManager), no
// relay, NAT, QUIC or websocket.
func newHost(priv crypto.PrivKey, listen string) (host.Host, error) {
	pid, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		return nil, err
	}
	if err := ps.AddPrivKey(pid, priv); err != nil {
		return nil, err
	}
	if err := ps.AddPubKey(pid, priv.GetPublic()); err != nil {
		return nil, err
	}
	rm := network.NullResourceManager
	sw, err := swarm.NewSwarm(pid, ps, swarm.WithResourceManager(rm))
	if err != nil {
		return nil, err
	}
	h, err := bhost.NewHost(sw, &bhost.HostOpts{EnablePing: true})
	if err != nil {
		sw.Close()
		return nil, err
	}

	nt, err := noise.New(priv)
	if err != nil {
		h.Close()
		return nil, err
	}
	secure := new(csms.SSMuxer)
	secure.AddTransport(noise.ID, nt)
	muxers := msmux.NewBlankTransport()
	muxers.AddTransport(yamuxID, yamux.DefaultTransport)
	up, err := tptu.New(secure, muxers, tptu.WithResourceManager(rm))
	if err != nil {
		h.Close()
		return nil, err
	}
	t, err := tcp.NewTCPTransport(up, rm)
	if err != nil {
		h.Close()
		return nil, err
	}
	if err := sw.AddTransport(t); err != nil {
		h.Close()
		return nil, err
	}
	addr, err := ma.NewMultiaddr(listen)
	if err != nil {
		h.Close()
		return nil, err
	}
	if err := sw.Listen(addr); err != nil {
		h.Close()
		return nil, err
	}
	h.Start() // identify etc.
	return h, nil
}

// tracingHost reports the protocol of every stream go-data-transfer and
// go-graphsync open (after multistream negotiation) or accept
// (--trace-streams): {"type":"stream","dir":"out"|"in","peer":..,"protocol":..}.
type tracingHost struct {
	host.Host
	out *gopeerkit.Writer
}

func (t *tracingHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	s, err := t.Host.NewStream(ctx, p, pids...)
	if err != nil {
		return s, err
	}
	t.out.Emit(map[string]any{"type": "stream", "dir": "out", "peer": p.String(), "protocol": string(s.Protocol()), "offered": pids})
	return s, nil
}

func (t *tracingHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	t.Host.SetStreamHandler(pid, func(s network.Stream) {
		t.out.Emit(map[string]any{"type": "stream", "dir": "in", "peer": s.Conn().RemotePeer().String(), "protocol": string(s.Protocol())})
		handler(s)
	})
}
