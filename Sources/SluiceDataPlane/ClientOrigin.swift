import Foundation
import NIOCore
import SluiceNet

/// Where a request came from, as the listener saw it: the peer, and the forwarding header's
/// value when one is configured. Read only for keys limited to source networks.
public struct ClientOrigin: Sendable {
    public var peer: SocketAddress?
    /// Every value of the configured header, comma-joined (`X-Forwarded-For` style lists).
    public var forwardedFor: String?

    public init(peer: SocketAddress?, forwardedFor: String? = nil) {
        self.peer = peer
        self.forwardedFor = forwardedFor
    }
}

/// Which peers' forwarding header is believed. The header is the client's to write, so it
/// counts only when the peer is a trusted proxy, and then only up to the first hop (from the
/// right) that is not one: everything left of that hop is whatever the client sent.
public struct ClientAddressPolicy: Sendable {
    /// Lower-cased header name, e.g. `x-forwarded-for`; nil believes no header.
    public var header: String?
    public var trustedProxies: [IPNetwork]

    public init(header: String? = nil, trustedProxies: [IPNetwork] = []) {
        self.header = header
        self.trustedProxies = trustedProxies
    }

    /// The client's address, or nil when it cannot be told (a malformed hop, no peer).
    public func clientAddress(_ origin: ClientOrigin) -> IPAddress? {
        guard let peer = origin.peer.flatMap(IPAddress.init) else { return nil }
        guard header != nil, isTrusted(peer), let forwarded = origin.forwardedFor else { return peer }
        var client = peer
        for hop in forwarded.split(separator: ",").reversed() {
            guard let address = IPAddress(hop.trimmingCharacters(in: .whitespaces)) else { return nil }
            client = address
            if !isTrusted(address) { break }
        }
        return client
    }

    private func isTrusted(_ address: IPAddress) -> Bool {
        trustedProxies.contains { $0.contains(address) }
    }
}
