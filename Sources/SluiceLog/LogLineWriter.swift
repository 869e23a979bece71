#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// Hands log lines to a background thread that writes them to a file descriptor (stdout) in
/// batches. A request never waits on the write: `append` only copies bytes under a short lock.
/// The buffer is bounded; when it is full (the reader of stdout is slower than the traffic),
/// lines are dropped and counted (`dropped`, exposed as `sluice_log_lines_dropped_total`).
public final class LogLineWriter: @unchecked Sendable {
    // @unchecked: `pending`, `stopping` and the counters are guarded by `condition`.
    public static let standardOutput = LogLineWriter(fileDescriptor: 1)

    private let fileDescriptor: Int32
    private let capacity: Int
    private let condition = NSCondition()
    private var pending: [UInt8] = []
    private var stopping = false
    private var thread: Thread?
    private let droppedLines = Atomic<Int>(0)
    /// Wake the writer early once this much is waiting (else it writes every `interval`).
    private let batchBytes = 64 * 1024
    private let interval: TimeInterval = 0.02

    public init(fileDescriptor: Int32, capacity: Int = 8 * 1024 * 1024) {
        self.fileDescriptor = fileDescriptor
        self.capacity = capacity
        pending.reserveCapacity(batchBytes * 2)
    }

    /// Lines dropped because the buffer was full, since start.
    public var dropped: Int { droppedLines.load(ordering: .relaxed) }

    /// Queues one complete line (ending in a newline). Never blocks on I/O.
    public func append(_ line: [UInt8]) {
        condition.lock()
        if thread == nil, !stopping { startLocked() }
        guard pending.count + line.count <= capacity else {
            condition.unlock()
            droppedLines.add(1, ordering: .relaxed)
            return
        }
        pending.append(contentsOf: line)
        let wake = pending.count >= batchBytes
        condition.unlock()
        if wake { condition.signal() }
    }

    /// Writes everything queued and stops the thread (at shutdown).
    public func flush() {
        condition.lock()
        let started = thread != nil
        stopping = true
        condition.unlock()
        condition.signal()
        if started {
            condition.lock()
            while thread != nil { condition.wait() }
            condition.unlock()
        }
        // Anything appended after the thread stopped.
        condition.lock()
        let rest = pending
        pending.removeAll()
        condition.unlock()
        write(rest)
    }

    private func startLocked() {
        let thread = Thread { [self] in run() }
        thread.name = "sluice-log-writer"
        self.thread = thread
        thread.start()
    }

    private func run() {
        var batch: [UInt8] = []
        batch.reserveCapacity(batchBytes * 2)
        while true {
            condition.lock()
            if pending.isEmpty, !stopping {
                _ = condition.wait(until: Date(timeIntervalSinceNow: interval))
            }
            swap(&batch, &pending)
            let done = stopping && batch.isEmpty
            if done {
                thread = nil
                condition.unlock()
                condition.broadcast()
                return
            }
            condition.unlock()
            write(batch)
            batch.removeAll(keepingCapacity: true)
        }
    }

    private func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(fileDescriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0, errno == EINTR {
                    continue
                } else {
                    return  // stdout is gone: nothing sensible to do with a log line
                }
            }
        }
    }
}
