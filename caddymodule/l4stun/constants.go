package l4stun

// readBufSize is the buffer a handler reads a datagram into: caddy-l4's
// own buffer for a datagram (udpBufPool, 9000 bytes, for jumbo frames),
// so that no read returns part of one and the rest as the next.
const readBufSize = 9000
