module github.com/rust-data-transfer/rust-data-transfer/interop/gopeerkit

go 1.23
