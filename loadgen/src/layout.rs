//! Who is where: session slots, meshes, and which peers a sender may
//! address. Slots `0..peers` are the normal peers (peer i in mesh
//! i % meshes); slots `peers..peers + stalled` are the stalled members
//! (stalled j in mesh j % meshes).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub peers: usize,
    pub meshes: usize,
    pub stalled: usize,
}

impl Layout {
    /// Every session of the run, normal and stalled.
    pub fn slots(&self) -> usize {
        self.peers + self.stalled
    }

    pub fn is_stalled(&self, slot: usize) -> bool {
        slot >= self.peers
    }

    pub fn mesh_of(&self, slot: usize) -> usize {
        if self.is_stalled(slot) {
            (slot - self.peers) % self.meshes
        } else {
            slot % self.meshes
        }
    }

    /// The normal peers of mesh `m`, in order (its peer 0 first).
    pub fn peers_in(&self, m: usize) -> Vec<usize> {
        (m..self.peers).step_by(self.meshes).collect()
    }

    /// The stalled slots of mesh `m`.
    pub fn stalled_in(&self, m: usize) -> Vec<usize> {
        (m..self.stalled)
            .step_by(self.meshes)
            .map(|j| self.peers + j)
            .collect()
    }

    /// The fewest normal peers any mesh has.
    pub fn smallest_mesh(&self) -> usize {
        self.peers / self.meshes
    }

    /// Display name of slot `i` (also its member's name).
    pub fn name(&self, slot: usize) -> String {
        if self.is_stalled(slot) {
            format!("load-stalled-{}", slot - self.peers)
        } else {
            format!("load-peer-{slot}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_and_stalled_are_spread_round_robin() {
        let l = Layout {
            peers: 7,
            meshes: 3,
            stalled: 4,
        };
        assert_eq!(l.slots(), 11);
        assert_eq!(l.peers_in(0), vec![0, 3, 6]);
        assert_eq!(l.peers_in(1), vec![1, 4]);
        assert_eq!(l.peers_in(2), vec![2, 5]);
        assert_eq!(l.stalled_in(0), vec![7, 10]);
        assert_eq!(l.stalled_in(1), vec![8]);
        assert_eq!(l.stalled_in(2), vec![9]);
        assert_eq!(l.smallest_mesh(), 2);
        for slot in 0..l.slots() {
            let m = l.mesh_of(slot);
            assert!(l.peers_in(m).contains(&slot) || l.stalled_in(m).contains(&slot));
        }
        assert_eq!(l.name(1), "load-peer-1");
        assert_eq!(l.name(8), "load-stalled-1");
    }

    #[test]
    fn one_mesh_holds_everyone() {
        let l = Layout {
            peers: 4,
            meshes: 1,
            stalled: 2,
        };
        assert_eq!(l.peers_in(0), vec![0, 1, 2, 3]);
        assert_eq!(l.stalled_in(0), vec![4, 5]);
        assert!((0..6).all(|s| l.mesh_of(s) == 0));
    }
}
