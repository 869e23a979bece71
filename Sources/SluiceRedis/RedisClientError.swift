/// What went wrong with a Redis call. The cases are the ones a caller decides on:
/// Redis answered with an error, the connection broke, or nothing came back in time.
public enum RedisClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Redis answered with an error reply (`ERR ...`, `NOSCRIPT ...`, `WRONGTYPE ...`).
    case server(String)
    /// The connection closed, or could not be opened, before the reply arrived.
    case connectionClosed
    /// Could not connect; the text says why. While backing off the client fails fast with this.
    case connectFailed(String)
    /// No reply within the command timeout (or connect within the connect timeout).
    case timeout
    /// Redis sent bytes that are not RESP2, or a reply nobody asked for.
    case protocolError(String)
    /// The client was shut down.
    case shutdown
    /// Too many commands already wait for replies on the connection; nothing was sent.
    case overloaded

    public var description: String {
        switch self {
        case .server(let message): return "redis error reply: \(message)"
        case .connectionClosed: return "redis connection closed"
        case .connectFailed(let reason): return "cannot connect to redis: \(reason)"
        case .timeout: return "redis did not answer in time"
        case .protocolError(let reason): return "redis protocol error: \(reason)"
        case .shutdown: return "redis client shut down"
        case .overloaded: return "too many redis commands waiting for replies"
        }
    }

    /// The first word of a server error (`NOSCRIPT`, `WRONGTYPE`, `ERR`), if this is one.
    public var serverErrorCode: Substring? {
        guard case .server(let message) = self else { return nil }
        return message.split(separator: " ", maxSplits: 1).first
    }
}
