import SluiceRedis

/// The Lua scripts of lua/, as embedded at build time. shared.lua (calendar and spend helpers)
/// is prepended to the scripts that use it: Redis scripts cannot share code.
public enum LimiterScripts {
    public static let admit = RedisScript(name: "admit", source: EmbeddedLua.shared + "\n" + EmbeddedLua.admit + "\n")
    public static let settle = RedisScript(name: "settle", source: EmbeddedLua.shared + "\n" + EmbeddedLua.settle + "\n")
    public static let sweep = RedisScript(name: "sweep", source: EmbeddedLua.shared + "\n" + EmbeddedLua.sweep + "\n")
    public static let renew = RedisScript(name: "renew", source: EmbeddedLua.renew + "\n")
    public static let seed = RedisScript(name: "seed", source: EmbeddedLua.shared + "\n" + EmbeddedLua.seed + "\n")
    public static let all = [admit, settle, sweep, renew, seed]
}
