import Foundation

/// `promtool check metrics` on a Prometheus exposition, when promtool is installed (Debian's
/// `prometheus` package; the test command installs it).
public enum PromtoolCheck {
    public struct Verdict: Sendable {
        public let passed: Bool
        public let output: String
    }

    /// nil when promtool is not on this machine.
    public static func metrics(_ exposition: String) async -> Verdict? {
        guard let path = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first(where: FileManager.default.isExecutableFile)
        else { return nil }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-promtool-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let input = folder.appendingPathComponent("metrics.txt").path
        let output = folder.appendingPathComponent("output.txt").path
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try Data(exposition.utf8).write(to: URL(fileURLWithPath: input))
            let code = try await ChildProcess.run(path, ["check", "metrics"], input: input, output: output)
            return Verdict(passed: code == 0, output: (try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
        } catch {
            return Verdict(passed: false, output: "promtool did not run: \(error)")
        }
    }
}
