import Foundation

/// Weighted linear least squares for a handful of parameters (issue 12: written here, no
/// packages): minimises Σ wᵢ (Σⱼ aᵢⱼ xⱼ − yᵢ)² through the normal equations (AᵀWA) x = AᵀWy,
/// solved by Gaussian elimination with partial pivoting on the column-scaled system.
///
/// A parameter the data cannot determine (its column is zero, or a combination of the others:
/// one entry size gives c0 and c1·s in fixed proportion) is set to 0 and reported in
/// `determined`, instead of being given an arbitrary value by a near-singular solve.
public enum LeastSquares {
    /// The solution and which parameters the data determined.
    public struct Solution: Equatable, Sendable {
        /// One value per column.
        public var x: [Double]
        /// Whether each parameter was determined (false: set to 0).
        public var determined: [Bool]
    }

    /// Solves for `columns` parameters; `rows` are (a, y, w) with `a.count == columns`.
    public static func solve(rows: [(a: [Double], y: Double, w: Double)], columns: Int) -> Solution {
        var n = [[Double]](repeating: [Double](repeating: 0, count: columns), count: columns)
        var b = [Double](repeating: 0, count: columns)
        for r in rows {
            for j in 0..<columns {
                b[j] += r.w * r.a[j] * r.y
                for k in 0..<columns { n[j][k] += r.w * r.a[j] * r.a[k] }
            }
        }
        // Scaling every column to a unit diagonal makes the pivot threshold relative.
        let scale = (0..<columns).map { n[$0][$0] > 0 ? n[$0][$0].squareRoot() : 0 }
        var active = (0..<columns).filter { scale[$0] > 0 }
        while true {
            if let x = eliminate(n, b, scale, active) {
                var full = [Double](repeating: 0, count: columns)
                for (i, j) in active.enumerated() { full[j] = x[i] / scale[j] }
                return Solution(x: full, determined: (0..<columns).map { active.contains($0) })
            }
            // The last dependent column goes (a pivot that vanished): its parameter is fixed at 0.
            guard let dependent = dependentColumn(n, scale, active) else {
                return Solution(x: [Double](repeating: 0, count: columns), determined: [Bool](repeating: false, count: columns))
            }
            active.removeAll { $0 == dependent }
        }
    }

    /// Solves the scaled normal equations restricted to `active`, or nil when a pivot vanishes.
    private static func eliminate(_ n: [[Double]], _ b: [Double], _ scale: [Double], _ active: [Int]) -> [Double]? {
        let m = active.count
        var a = active.map { j in active.map { k in n[j][k] / (scale[j] * scale[k]) } + [b[j] / scale[j]] }
        for c in 0..<m {
            guard let p = (c..<m).max(by: { abs(a[$0][c]) < abs(a[$1][c]) }), abs(a[p][c]) > 1e-10 else { return nil }
            a.swapAt(c, p)
            for r in 0..<m where r != c {
                let f = a[r][c] / a[c][c]
                if f == 0 { continue }
                for k in c...m { a[r][k] -= f * a[c][k] }
            }
        }
        return (0..<m).map { a[$0][m] / a[$0][$0] }
    }

    /// The active column that elimination in order finds dependent on the ones before it.
    private static func dependentColumn(_ n: [[Double]], _ scale: [Double], _ active: [Int]) -> Int? {
        for end in 1...active.count
        where eliminate(n, [Double](repeating: 0, count: n.count), scale, Array(active.prefix(end))) == nil {
            return active[end - 1]
        }
        return active.last
    }
}
