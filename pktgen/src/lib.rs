//! Traffic generator and sink; lands with the AF_XDP engine (see docs/architecture.md).
