import NIOCore

/// How long a public connection may take over each part of its life (`listener` settings).
public struct ListenerLimits: Sendable, Equatable {
    /// From the first byte of a request to the end of its headers.
    public var headerTimeout: TimeAmount = .seconds(10)
    /// From the end of the headers to the end of the body.
    public var bodyTimeout: TimeAmount = .seconds(30)
    /// A kept-alive connection with no request in progress is closed after this.
    public var idleTimeout: TimeAmount = .seconds(60)
    /// Connections beyond this many are closed as soon as they are accepted.
    public var maxConnections = 10_000

    public init() {}
}

/// The client-side clock of one public connection: which deadline applies now, and whether it
/// has passed. Pure (no I/O, time passed in), so it is tested without sockets; the channel
/// handlers feed it events and carry out its answers.
///
/// While a response is being produced no client deadline runs (the upstream timeouts govern);
/// slow readers of a response are held back by back-pressure instead.
struct ConnectionGuardStateMachine {
    enum Expiry: Equatable {
        case header, body, idle
    }

    enum TimerAction: Equatable {
        case none
        case arm(NIODeadline)
        case close(Expiry)
    }

    let limits: ListenerLimits
    private var idleSince: NIODeadline
    /// Set when bytes of a request arrive before its headers are complete.
    private var headerStartedAt: NIODeadline?
    /// Set while a request's body is being read (headers seen, end not yet).
    private var bodyStartedAt: NIODeadline?
    /// Requests whose response has not ended.
    private var open = 0

    init(limits: ListenerLimits, now: NIODeadline) {
        self.limits = limits
        self.idleSince = now
    }

    mutating func bytesReceived(now: NIODeadline) {
        if bodyStartedAt == nil, headerStartedAt == nil { headerStartedAt = now }
    }

    mutating func headReceived(now: NIODeadline) {
        headerStartedAt = nil
        bodyStartedAt = now
        open += 1
    }

    mutating func requestEnded() {
        bodyStartedAt = nil
    }

    mutating func responseEnded(now: NIODeadline) {
        open = max(0, open - 1)
        guard open == 0 else { return }
        idleSince = now
        // Bytes of the next request that came in while we answered: their clock starts now.
        if headerStartedAt != nil { headerStartedAt = now }
    }

    /// The deadline in force, if any.
    var deadline: (NIODeadline, Expiry)? {
        if let bodyStartedAt { return (bodyStartedAt + limits.bodyTimeout, .body) }
        if open > 0 { return nil }
        if let headerStartedAt { return (headerStartedAt + limits.headerTimeout, .header) }
        return (idleSince + limits.idleTimeout, .idle)
    }

    /// The timer fired (or an event happened): close, or when to look again.
    func check(now: NIODeadline) -> TimerAction {
        guard let (deadline, expiry) = deadline else { return .none }
        return now >= deadline ? .close(expiry) : .arm(deadline)
    }
}
