/// A Redis server's address, as a cluster or sentinel names it.
public struct RedisNodeAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port` (the port after the last colon, so IPv6 hosts work).
    public init?(_ text: some StringProtocol) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }

    public var description: String { "\(host):\(port)" }
}

/// Which master serves each of the 16384 slots. Pure (no I/O): built from a `CLUSTER SLOTS`
/// reply, patched by `MOVED` redirections until the next refresh.
struct RedisClusterSlotMap: Sendable, Equatable {
    /// Index into `masters` per slot; `unassigned` for a slot no master serves.
    private var owners: [UInt16]
    private(set) var masters: [RedisNodeAddress]
    private static let unassigned = UInt16.max

    init() {
        owners = Array(repeating: Self.unassigned, count: RedisHashSlot.count)
        masters = []
    }

    /// From `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replicas...], ...]`. An empty
    /// host means "the node you asked", so `asked` fills it in.
    init(clusterSlots reply: RESPValue, asked: RedisNodeAddress) throws(RedisClientError) {
        self.init()
        guard let ranges = reply.array else { throw .protocolError("CLUSTER SLOTS did not return an array") }
        for range in ranges {
            guard let parts = range.array, parts.count >= 3, let start = parts[0].int, let end = parts[1].int,
                  0 <= start, start <= end, end < RedisHashSlot.count,
                  let node = parts[2].array, node.count >= 2, let port = node[1].int.map(Int.init) else {
                throw .protocolError("CLUSTER SLOTS returned a malformed range")
            }
            let host = node[0].string ?? ""
            let master = RedisNodeAddress(host: host.isEmpty || host == "?" ? asked.host : host, port: port)
            assign(UInt16(start)...UInt16(end), to: master)
        }
    }

    func master(for slot: UInt16) -> RedisNodeAddress? {
        let owner = owners[Int(slot)]
        return owner == Self.unassigned ? nil : masters[Int(owner)]
    }

    /// Every slot has a master.
    var isComplete: Bool { !owners.contains(Self.unassigned) }

    /// A `MOVED` reply: the slot now lives on `master`.
    mutating func assign(_ slots: ClosedRange<UInt16>, to master: RedisNodeAddress) {
        let index: Int
        if let known = masters.firstIndex(of: master) {
            index = known
        } else {
            masters.append(master)
            index = masters.count - 1
        }
        for slot in slots { owners[Int(slot)] = UInt16(index) }
    }
}

/// The cluster's answers that tell a client to go elsewhere or wait, parsed from error replies.
enum RedisClusterRedirect: Equatable {
    /// The slot has moved for good: update the map and send there.
    case moved(slot: UInt16, to: RedisNodeAddress)
    /// The slot is migrating and this key already left: send there once, after `ASKING`.
    case ask(slot: UInt16, to: RedisNodeAddress)
    /// A multi-key operation hit a slot in the middle of migrating: try again shortly.
    case tryAgain
    /// The cluster cannot serve (a master is down and not yet replaced): wait, refresh, retry.
    case clusterDown

    init?(_ error: RedisClientError) {
        guard case .server(let message) = error else { return nil }
        let words = message.split(separator: " ")
        switch words.first {
        case "MOVED", "ASK":
            guard words.count >= 3, let slot = UInt16(words[1]), Int(slot) < RedisHashSlot.count,
                  let address = RedisNodeAddress(words[2]) else { return nil }
            self = words[0] == "MOVED" ? .moved(slot: slot, to: address) : .ask(slot: slot, to: address)
        case "TRYAGAIN": self = .tryAgain
        case "CLUSTERDOWN": self = .clusterDown
        default: return nil
        }
    }
}
