// Package l4stun serves the super peer's STUN responder (package stun) on
// caddy-l4's listeners: the handler layer4.handlers.netsody_stun answers
// Binding requests, the matcher layer4.matchers.stun picks them out of
// the other datagrams on a port. caddymodule imports it, so that
// `xcaddy build --with github.com/netsody/superpeer/caddymodule` has both
// modules, and the layer4 app they run in.
//
// caddy-l4 (v0.1.2) serves UDP as one "connection" per client address and
// port: a goroutine that reads the client's datagrams from a queue of five
// until the server's idle_timeout passes without one (30 s by default).
// One dispatcher fills every client's queue, and blocks, for every
// client, while one queue is full (layer4/server.go, servePacket). A
// handler that returns after one datagram lets that happen: the client's
// next datagrams fill its queue before caddy-l4 has noticed the return,
// and the whole listener stops. So the handler answers every datagram of
// its client until caddy-l4 ends the connection, and then reads on until
// caddy-l4 has closed its queue. A short idle_timeout (Caddyfile.example
// has 5s) keeps the goroutines few: a STUN client sends a request, maybe
// a few retransmissions, and is gone.
package l4stun
