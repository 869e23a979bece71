import Crypto
import Logging
import NIOCore

/// A Lua script run with `EVALSHA`. Its SHA-1 is computed here, so the first call needs
/// no round trip to learn it.
public struct RedisScript: Sendable {
    public let name: String
    public let source: String
    public let sha1: String

    public init(name: String, source: String) {
        self.name = name
        self.source = source
        self.sha1 = Insecure.SHA1.hash(data: Array(source.utf8))
            .map { byte in
                let hex = String(byte, radix: 16)
                return byte < 16 ? "0" + hex : hex
            }
            .joined()
    }
}

extension RedisClient {
    /// Loads scripts with `SCRIPT LOAD` (at start-up; on every master of a cluster) and checks
    /// Redis agrees on each hash.
    public func load(_ scripts: [RedisScript]) async throws(RedisClientError) {
        for script in scripts {
            for reply in try await sendToEveryMaster(RedisCommand("SCRIPT", "LOAD", script.source)) {
                try Self.check(reply, loading: script)
            }
        }
    }

    private static func check(_ reply: RESPValue, loading script: RedisScript) throws(RedisClientError) {
        guard reply.string == script.sha1 else {
            throw .protocolError("SCRIPT LOAD of \(script.name) returned \(reply.string ?? "nothing"), expected \(script.sha1)")
        }
    }

    /// Runs a script by hash. When Redis has forgotten it (`NOSCRIPT`: `SCRIPT FLUSH`, a restart,
    /// a failover) it is loaded again and run once more, so the caller never sees that.
    public func evalScript(
        _ script: RedisScript, keys: [any RESPArgument], arguments: [any RESPArgument]
    ) async throws(RedisClientError) -> RESPValue {
        try await evalScript(script, keys: keys, arguments: arguments, replicas: 0, waitTimeout: .zero).reply
    }

    /// Runs a script by hash and, when `replicas` > 0, then `WAIT`s for that many replicas to
    /// have its writes: the reply and how many did.
    public func evalScript(
        _ script: RedisScript, keys: [any RESPArgument], arguments: [any RESPArgument], replicas: Int, waitTimeout: Duration
    ) async throws(RedisClientError) -> (reply: RESPValue, replicas: Int) {
        let command = RedisCommand("EVALSHA", [script.sha1 as any RESPArgument, keys.count] + keys + arguments)
        func run() async throws(RedisClientError) -> (reply: RESPValue, replicas: Int) {
            if replicas > 0 { return try await sendReplicated(command, replicas: replicas, waitTimeout: waitTimeout) }
            return (try await send(command), 0)
        }
        do {
            return try await run()
        } catch let error where error.serverErrorCode == "NOSCRIPT" {
            logger.info("redis forgot a script, loading it again", metadata: ["script": "\(script.name)"])
            // On the server that forgot it: the one that serves the script's first key.
            try Self.check(try await send(RedisCommand("SCRIPT", ["LOAD", script.source], routingKey: command.routingKey)),
                           loading: script)
            return try await run()
        }
    }
}
