import NIOCore
import Synchronization

/// Runs Swift tasks on a NIO event loop. A request handled under this preference stays on its
/// connection's loop: the Redis and upstream futures it awaits complete on that loop too, so
/// nothing hops to the global pool and back (each hop is a thread wake-up).
final class EventLoopTaskExecutor: TaskExecutor, Sendable {
    let eventLoop: any EventLoop

    private init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        eventLoop.execute { job.runSynchronously(on: executor) }
    }

    private static let executors = Mutex<[ObjectIdentifier: EventLoopTaskExecutor]>([:])

    /// One executor per loop, made on first use.
    static func on(_ eventLoop: any EventLoop) -> EventLoopTaskExecutor {
        executors.withLock { executors in
            if let existing = executors[ObjectIdentifier(eventLoop)] { return existing }
            let made = EventLoopTaskExecutor(eventLoop)
            executors[ObjectIdentifier(eventLoop)] = made
            return made
        }
    }
}
