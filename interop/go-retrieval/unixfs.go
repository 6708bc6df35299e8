package main

import (
	"context"
	"os"

	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	ihelper "github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	"github.com/ipfs/go-cid"
	ipldformat "github.com/ipfs/go-ipld-format"
)

// importUnixFS imports the file like `ipfs add --cid-version=1` (kubo's
// defaults otherwise): 256 KiB fixed-size chunks, balanced layout with 174
// links per node, raw leaves, CIDv1 dag-pb, sha2-256 (the same layout as
// interop/go-peer's `import`). It returns the root, the file size and the
// number of blocks written.
func importUnixFS(ctx context.Context, dag ipldformat.DAGService, path string) (cid.Cid, int64, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return cid.Undef, 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return cid.Undef, 0, 0, err
	}
	prefix, err := merkledag.PrefixForCidVersion(1)
	if err != nil {
		return cid.Undef, 0, 0, err
	}
	counting := &countingDAG{DAGService: dag}
	buffered := ipldformat.NewBufferedDAG(ctx, counting)
	params := ihelper.DagBuilderParams{
		Maxlinks:   ihelper.DefaultLinksPerBlock,
		RawLeaves:  true,
		CidBuilder: prefix,
		Dagserv:    buffered,
	}
	db, err := params.New(chunker.NewSizeSplitter(f, 256<<10))
	if err != nil {
		return cid.Undef, 0, 0, err
	}
	nd, err := balanced.Layout(db)
	if err != nil {
		return cid.Undef, 0, 0, err
	}
	if err := buffered.Commit(); err != nil {
		return cid.Undef, 0, 0, err
	}
	return nd.Cid(), fi.Size(), counting.n, nil
}

// countingDAG counts the nodes added through it.
type countingDAG struct {
	ipldformat.DAGService
	n int
}

func (c *countingDAG) Add(ctx context.Context, nd ipldformat.Node) error {
	c.n++
	return c.DAGService.Add(ctx, nd)
}

func (c *countingDAG) AddMany(ctx context.Context, nds []ipldformat.Node) error {
	c.n += len(nds)
	return c.DAGService.AddMany(ctx, nds)
}
