import Foundation
import NIOCore
import NIOPosix
import SluiceNet
import SluiceRedis
import Synchronization

/// A private `redis-server` for tests that restart, pause or reconfigure Redis, so they never
/// disturb the shared development stack. Stopped (SIGKILL) when `stop()` runs or on deinit.
public final class RedisServerProcess: Sendable {
    public let port: Int
    private let extraArguments: [String]
    /// Replaced by `restart()`.
    private let process = Mutex<ChildProcess?>(nil)
    private let directory: URL
    private let tls: Bool

    /// Starts redis-server on a free loopback port with `arguments` added to its command line.
    /// With `tls` the port speaks only TLS, with a fresh self-signed certificate for 127.0.0.1
    /// at `certificatePath`.
    public init(arguments: [String] = [], tls: Bool = false) async throws {
        self.port = try await Self.freePort()
        self.extraArguments = arguments
        self.tls = tls
        self.directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("sluice-redis-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if tls { try await makeCertificate() }
        try await start()
    }

    public var certificatePath: String { directory.appendingPathComponent("cert.pem").path }
    private var keyPath: String { directory.appendingPathComponent("key.pem").path }

    private func makeCertificate() async throws {
        let code = try await ChildProcess.run("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", keyPath, "-out", certificatePath,
        ])
        guard code == 0 else { throw RedisServerProcessError.certificate }
    }

    deinit {
        process.withLock { $0 }?.send(SIGKILL)
        try? FileManager.default.removeItem(at: directory)
    }

    /// A URL for this server, e.g. to hand to `RedisConfiguration(url:)`.
    public var url: String { "redis://127.0.0.1:\(port)/0" }

    public func start() async throws {
        let listen = tls
            ? ["--port", "0", "--tls-port", String(port), "--tls-cert-file", certificatePath,
               "--tls-key-file", keyPath, "--tls-auth-clients", "no"]
            : ["--port", String(port)]
        let started = try ChildProcess(try Self.redisServerBinary().path, ["--bind", "127.0.0.1"] + listen + [
            "--save", "", "--appendonly", "no",
            "--dir", directory.path, "--daemonize", "no", "--loglevel", "warning",
        ] + extraArguments)
        process.withLock { $0 = started }
        try await waitUntilListening()
    }

    /// SIGKILL and wait for the process to be gone (connections drop at once).
    public func kill() async {
        guard let process = process.withLock({ $0 }) else { return }
        process.send(SIGKILL)
        _ = await process.exit()
    }

    public func restart() async throws {
        await kill()
        try await start()
    }

    /// SIGSTOP: the port still accepts connections, but nothing is answered.
    public func pause() { signal(SIGSTOP) }

    /// SIGCONT after `pause()`.
    public func resume() { signal(SIGCONT) }

    /// SIGKILL without waiting (the process is reaped in the background), for `defer`.
    public func stop() {
        signal(SIGCONT)
        signal(SIGKILL)
        try? FileManager.default.removeItem(at: directory)
    }

    private func signal(_ number: Int32) {
        process.withLock { $0 }?.send(number)
    }

    /// Polls until the port accepts a connection (redis-server has no readiness signal we can
    /// read without parsing its log); bounded at 10 seconds.
    private func waitUntilListening() async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            // A server that exited (its port taken after all) will not start: say so at once.
            if let process = process.withLock({ $0 }), !process.isRunning { break }
            do {
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connect(hostOrAddress: "127.0.0.1", port: port).get()
                try await channel.close()
                return
            } catch {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        throw RedisServerProcessError.didNotStart(port: port)
    }

    private static func redisServerBinary() throws -> URL {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for folder in path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin"] {
            let candidate = URL(fileURLWithPath: folder).appendingPathComponent("redis-server")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        throw RedisServerProcessError.notInstalled
    }

    /// Asks the kernel for a free loopback port.
    public static func freePort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress?.port ?? 0
        try await channel.close()
        return port
    }
}

public enum RedisServerProcessError: Error {
    case notInstalled
    case didNotStart(port: Int)
    case certificate
}
