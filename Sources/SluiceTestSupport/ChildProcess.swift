#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// A process the tests start (redis-server, a topology script, openssl, promtool), spawned with
/// `posix_spawn` and reaped by a thread of its own. Not Foundation's `Process`: its shared
/// monitor thread never reported the end of a script whose children daemonize, and a child
/// it spawns may keep copies of the test process's sockets. Here only stdio reaches the child
/// (a daemonized redis-server would otherwise hold a port just probed as free, or a test's
/// listener, for as long as it runs).
public final class ChildProcess: Sendable {
    public let pid: pid_t
    private struct State {
        var status: Int32?
        var waiters: [CheckedContinuation<Int32, Never>] = []
    }
    private let state = Mutex(State())

    /// Starts `executable` (a path) with `arguments`: stdin from `input` (default /dev/null),
    /// stdout and stderr to the file `output` (default /dev/null).
    public init(_ executable: String, _ arguments: [String], input: String = "/dev/null",
                output: String = "/dev/null") throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, input, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        _ = Self.closeFrom?(&actions, 3)
        // Default signal handling and nothing blocked: a child spawned from a thread that
        // blocks signals (the concurrency pool's do) would inherit that mask and never see the
        // SIGTERM a stop script sends it.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var blocked = sigset_t(), defaults = sigset_t()
        sigemptyset(&blocked)
        sigfillset(&defaults)
        posix_spawnattr_setsigmask(&attributes, &blocked)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard spawned == 0 else { throw ChildProcessError.spawnFailed(executable, code: spawned) }
        self.pid = pid
        let reaper = Thread { [self] in reap() }
        reaper.name = "sluice-test-reaper"
        reaper.start()
    }

    /// Runs `executable` to its end; its exit code (128 + n when signal n ended it).
    public static func run(_ executable: String, _ arguments: [String], input: String = "/dev/null",
                           output: String = "/dev/null") async throws -> Int32 {
        let child = try ChildProcess(executable, arguments, input: input, output: output)
        return Self.exitCode(await child.exit())
    }

    public var isRunning: Bool { state.withLock { $0.status == nil } }

    /// Sends `signal` unless the process has been reaped (its pid may belong to another by then).
    public func send(_ signal: Int32) {
        state.withLock { state in
            if state.status == nil { _ = Glibc.kill(pid, signal) }
        }
    }

    /// The raw `waitpid` status, once the process has ended.
    public func exit() async -> Int32 {
        await withCheckedContinuation { continuation in
            let status = state.withLock { state -> Int32? in
                if state.status == nil { state.waiters.append(continuation) }
                return state.status
            }
            if let status { continuation.resume(returning: status) }
        }
    }

    /// A `waitpid` status as a shell reports it.
    static func exitCode(_ status: Int32) -> Int32 {
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    private func reap() {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1, errno == EINTR {}
        let waiters = state.withLock { state in
            state.status = status
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: status) }
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which Swift's Glibc
    /// module does not declare.
    private static let closeFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()
}

public enum ChildProcessError: Error {
    case spawnFailed(String, code: Int32)
}
