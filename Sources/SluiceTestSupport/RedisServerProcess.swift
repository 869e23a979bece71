import Foundation
import NIOCore
import NIOPosix
import SluiceNet
import SluiceRedis

/// A private `redis-server` for tests that restart, pause or reconfigure Redis, so they never
/// disturb the shared development stack. Stopped (SIGKILL) when `stop()` runs or on deinit.
public final class RedisServerProcess: @unchecked Sendable {
    // @unchecked: `process` is replaced only by `start()`/`restart()`, which tests call from
    // one task at a time; the lock below guards it anyway.
    public let port: Int
    private let extraArguments: [String]
    private let lock = NSLock()
    private var process: Process?
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
        if tls { try makeCertificate() }
        try await start()
    }

    public var certificatePath: String { directory.appendingPathComponent("cert.pem").path }
    private var keyPath: String { directory.appendingPathComponent("key.pem").path }

    private func makeCertificate() throws {
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        openssl.arguments = [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", keyPath, "-out", certificatePath,
        ]
        openssl.standardOutput = FileHandle.nullDevice
        openssl.standardError = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        guard openssl.terminationStatus == 0 else { throw RedisServerProcessError.certificate }
    }

    deinit {
        process?.terminate()
        try? FileManager.default.removeItem(at: directory)
    }

    /// A URL for this server, e.g. to hand to `RedisConfiguration(url:)`.
    public var url: String { "redis://127.0.0.1:\(port)/0" }

    public func start() async throws {
        let process = Process()
        process.executableURL = try Self.redisServerBinary()
        let listen = tls
            ? ["--port", "0", "--tls-port", String(port), "--tls-cert-file", certificatePath,
               "--tls-key-file", keyPath, "--tls-auth-clients", "no"]
            : ["--port", String(port)]
        process.arguments = ["--bind", "127.0.0.1"] + listen + [
            "--save", "", "--appendonly", "no",
            "--dir", directory.path, "--daemonize", "no", "--loglevel", "warning",
        ] + extraArguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        lock.withLock { self.process = process }
        try await waitUntilListening()
    }

    /// SIGKILL and wait for the process to be gone (connections drop at once).
    public func kill() {
        let process = lock.withLock { self.process }
        guard let process, process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    public func restart() async throws {
        kill()
        try await start()
    }

    /// SIGSTOP: the port still accepts connections, but nothing is answered.
    public func pause() { signal(SIGSTOP) }

    /// SIGCONT after `pause()`.
    public func resume() { signal(SIGCONT) }

    public func stop() {
        resume()
        kill()
        try? FileManager.default.removeItem(at: directory)
    }

    private func signal(_ number: Int32) {
        if let process = lock.withLock({ self.process }), process.isRunning {
            Foundation.kill(process.processIdentifier, number)
        }
    }

    /// Polls until the port accepts a connection (redis-server has no readiness signal we can
    /// read without parsing its log); bounded at 10 seconds.
    private func waitUntilListening() async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            // A server that exited (its port taken after all) will not start: say so at once.
            if let process = lock.withLock({ self.process }), !process.isRunning { break }
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
