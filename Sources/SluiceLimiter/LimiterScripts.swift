import SluiceRedis

/// The Lua scripts of lua/, as embedded at build time. calendar.lua is prepended to both:
/// Redis scripts cannot share code.
public enum LimiterScripts {
    public static let admit = RedisScript(name: "admit", source: EmbeddedLua.calendar + "\n" + EmbeddedLua.admit + "\n")
    public static let settle = RedisScript(name: "settle", source: EmbeddedLua.calendar + "\n" + EmbeddedLua.settle + "\n")
    public static let renew = RedisScript(name: "renew", source: EmbeddedLua.renew + "\n")
    public static let all = [admit, settle, renew]
}
